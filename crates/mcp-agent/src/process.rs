//! The few process primitives the exec driver needs: is a PID alive (and is it still
//! the process we think it is), and send it a signal.

use std::path::Path;

/// A process's state letter from `/proc/<pid>/stat`, or None when it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Alive, and its command line contains every one of `needles` (guards against a
/// recycled PID).
pub fn alive_with_cmdline(pid: u32, needles: &[&str]) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
    needles.iter().all(|n| cmdline.contains(n))
}

/// A process's argument vector from `/proc/<pid>/cmdline`, or None when it is gone
/// or unreadable.
fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(
        text.strip_suffix('\0')
            .unwrap_or(&text)
            .split('\0')
            .map(str::to_string)
            .collect(),
    )
}

/// Alive, and running `command`: its argument vector is `command`, or, for a script,
/// an interpreter followed by `command`. Guards against a recycled PID before the
/// agent signals or trusts it.
pub fn runs_command(pid: u32, command: &[String]) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    if !alive(pid) {
        return false;
    }
    let Some(argv) = argv(pid) else {
        return false;
    };
    let Some(at) = argv.len().checked_sub(command.len()) else {
        return false;
    };
    // At most one argument before the command: a script's interpreter.
    at <= 1 && argv[at] == *program && argv[at + 1..] == *args
}

/// Sends `signal` to `pid`; false when there is no such process.
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a positive value, so
    // it never targets a process group or every process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Reads a PID file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!alive(u32::MAX - 1));
        assert!(!alive_with_cmdline(me, &["surely-not-in-my-cmdline-xyz"]));
    }

    #[test]
    fn runs_command_checks_the_arguments() {
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Kill(
            std::process::Command::new("sleep")
                .arg("307")
                .spawn()
                .expect("run sleep"),
        );
        let pid = child.0.id();
        // Until the child has exec'd, its cmdline is the test binary's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !alive_with_cmdline(pid, &["sleep"]) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let cmd = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(runs_command(pid, &cmd(&["sleep", "307"])));
        assert!(!runs_command(pid, &cmd(&["sleep", "30"])));
        assert!(!runs_command(pid, &cmd(&["sleep"])));
        assert!(!runs_command(pid, &cmd(&["/bin/sleep", "307"])));
        assert!(!runs_command(pid, &cmd(&["true", "sleep", "307"])));
        assert!(!runs_command(pid, &[]));
    }
}
