//! `mcp deploy FILE|DIR|NAME...`: validate locally, send to the master, show progress
//! (bars for image pulls, a line per step, per service: the master deploys a batch's
//! services on different nodes at the same time), end with what runs where. When a
//! service failed, the others still deploy: the table shows those, then the error
//! names every failed service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mcp_proto::agent::v1::deploy_event::Event as AgentEvent;
use mcp_proto::master::v1::{deploy_event::Event, Definition, DeployRequest};

use crate::error::CliError;
use crate::{client, output, Ctx};

/// The definition files a target names: a file, every `*.toml` in a directory, or
/// `services/NAME.toml` beside the CLI config.
fn files_of(ctx: &Ctx, target: &str) -> Result<Vec<PathBuf>, CliError> {
    let path = Path::new(target);
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CliError::usage(format!("{target}: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CliError::usage(format!(
                "{target}: no *.toml definitions in this directory"
            )));
        }
        return Ok(files);
    }
    // A bare name (no `/`, no `.toml`) may be `services/NAME.toml` beside the config.
    if mcp_types::name::check_dns_label(target).is_ok() {
        let candidate = ctx
            .config_dir
            .as_ref()
            .map(|dir| dir.join("services").join(format!("{target}.toml")));
        if let Some(candidate) = &candidate {
            if candidate.is_file() {
                return Ok(vec![candidate.clone()]);
            }
        }
        let beside = candidate.map_or_else(
            || "services/ beside the CLI config".to_string(),
            |c| c.display().to_string(),
        );
        return Err(CliError::usage(format!(
            "{target}: no such file or directory, and no {beside}"
        )));
    }
    Err(CliError::usage(format!(
        "{target}: no such file or directory"
    )))
}

pub async fn run(ctx: &Ctx, targets: &[String]) -> Result<(), CliError> {
    let mut definitions = Vec::new();
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for target in targets {
        for file in files_of(ctx, target)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::usage(format!("{}: cannot read: {e}", file.display())))?;
            let shown = file.display().to_string();
            match mcp_types::parse_definition(&shown, &text) {
                Ok(def) => names.push(def.name),
                Err(e) => problems.push(e.to_string()),
            }
            definitions.push(Definition {
                file: shown,
                toml: text,
            });
        }
    }
    if !problems.is_empty() {
        return Err(CliError::invalid(problems.join("\n")));
    }
    let mut master = client::master(ctx).await?;
    let mut stream = master
        .deploy(DeployRequest { definitions })
        .await?
        .into_inner();

    let show = !ctx.json && !ctx.quiet;
    let bars = MultiProgress::with_draw_target(if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style =
        ProgressStyle::with_template("  {prefix:<28} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    // Step lines go above the bars on a terminal, plainly to stderr otherwise.
    let say = |text: String| {
        if show && bars.is_hidden() {
            eprintln!("{text}");
        } else if show {
            let _ = bars.println(text);
        }
    };
    let mut pulls: HashMap<(String, String), ProgressBar> = HashMap::new();
    let mut failure = None;
    let mut deployed = 0usize;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(status) => {
                failure = Some(CliError::from(status));
                break;
            }
        };
        let who = format!("{}@{}", event.service, event.node);
        match event.event {
            Some(Event::Placed(p)) => say(format!(
                "{}: on {} ({})",
                event.service, event.node, p.reason
            )),
            Some(Event::Agent(a)) => match a.event {
                Some(AgentEvent::Step(s)) => {
                    let target = if s.component.is_empty() {
                        who.clone()
                    } else {
                        format!("{}/{}@{}", event.service, s.component, event.node)
                    };
                    say(format!("  {target:<28} {:<8} {}", s.step, s.message));
                }
                Some(AgentEvent::Done(_)) => deployed += 1,
                Some(AgentEvent::Pull(p)) if show => {
                    let key = (event.service.clone(), p.component.clone());
                    let bar = pulls.entry(key).or_insert_with(|| {
                        let bar = bars.add(ProgressBar::new(p.total.max(1)));
                        bar.set_style(style.clone());
                        bar.set_prefix(format!("{}/{} pull", event.service, p.component));
                        bar
                    });
                    if p.total > 0 {
                        bar.set_length(p.total);
                        bar.set_position(p.current.min(p.total));
                    }
                    bar.set_message(p.status);
                }
                _ => {}
            },
            Some(Event::Failed(f)) => {
                pulls.retain(|(service, _), bar| {
                    let keep = *service != event.service;
                    if !keep {
                        bar.finish_and_clear();
                    }
                    keep
                });
                say(format!("  {who:<28} {:<8} {}", "failed", f.message));
            }
            None => {}
        }
    }
    for bar in pulls.values() {
        bar.finish_and_clear();
    }
    if let Some(failure) = failure {
        // Some services of the batch did deploy: what runs where, then the error.
        if deployed > 0 && !ctx.json && !ctx.quiet {
            if let Ok(reply) = master.list(mcp_proto::master::v1::ListRequest {}).await {
                let services: Vec<_> = reply
                    .into_inner()
                    .services
                    .into_iter()
                    .filter(|s| names.contains(&s.name))
                    .collect();
                print!("{}", output::list_table(&services));
            }
        }
        return Err(failure);
    }
    // What runs where now, for the deployed services.
    let services: Vec<_> = master
        .list(mcp_proto::master::v1::ListRequest {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .collect();
    if ctx.json {
        ctx.print_json(&output::list_json(&services));
    } else if !ctx.quiet {
        print!("{}", output::list_table(&services));
    }
    Ok(())
}
