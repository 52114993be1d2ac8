//! `mcp login [--user NAME] [--password-stdin]` and `mcp logout`.

use std::io::{IsTerminal, Read};

use mcp_proto::master::v1::{master_client::MasterClient, LoginRequest, RevokeRequest};
use serde_json::json;

use crate::error::{Class, CliError};
use crate::{client, Ctx};

fn read_password(from_stdin: bool) -> Result<String, CliError> {
    let mut text = String::new();
    if from_stdin || !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("read the password from stdin: {e}")))?;
    } else {
        // rpassword turns echo off on the terminal and back on, even when the
        // read fails.
        text = rpassword::prompt_password("Password: ")
            .map_err(|e| CliError::usage(format!("read the password: {e}")))?;
    }
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(CliError::usage("empty password"));
    }
    Ok(password.to_string())
}

pub async fn login(ctx: &Ctx, user: Option<String>, password_stdin: bool) -> Result<(), CliError> {
    let user = user
        .or_else(|| std::env::var("USER").ok())
        .ok_or_else(|| CliError::usage("no user: pass --user NAME"))?;
    let password = read_password(password_stdin)?;
    let channel = client::channel(ctx).await?;
    let reply = MasterClient::new(channel)
        .login(LoginRequest {
            user: user.clone(),
            password,
        })
        .await?
        .into_inner();
    let path = client::token_file(ctx)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("create {}: {e}", dir.display())))?;
    }
    mcp_pki::ca::write_file(&path, reply.token.as_bytes(), 0o600)
        .map_err(|e| CliError::failed(format!("write the token: {e}")))?;
    if ctx.json {
        ctx.print_json(&json!({"user": user, "role": reply.role, "expires_at": reply.expires_at, "token_file": path.display().to_string()}));
    } else if !ctx.quiet {
        println!(
            "logged in as {user} ({}); token in {}",
            reply.role,
            path.display()
        );
    }
    Ok(())
}

/// Revokes the token at the master, then deletes the token file. The file goes only
/// once the master no longer accepts the token (revoked now, or refused already), so a
/// logout that could not reach the master can be run again.
pub async fn logout(ctx: &Ctx) -> Result<(), CliError> {
    let path = client::token_file(ctx)?;
    if !path.exists() {
        if ctx.json {
            ctx.print_json(&json!({"logged_out": true, "revoked": false}));
        } else if !ctx.quiet {
            println!("not logged in (no {})", path.display());
        }
        return Ok(());
    }
    let kept = |e: CliError| {
        CliError::new(
            e.class,
            format!(
                "{}\nthe token was not revoked and {} is kept: run `mcp logout` again (deleting the file drops the local copy only)",
                e.message,
                path.display()
            ),
        )
    };
    let mut master = client::master(ctx).await.map_err(kept)?;
    let note = match master.revoke(RevokeRequest {}).await {
        Ok(_) => None,
        // Expired, revoked before, or from another master: dead there already. (A
        // status with a source is the CLI's own transport failing, not a refusal.)
        Err(status)
            if Class::of_code(status.code()) == Class::Refused
                && std::error::Error::source(&status).is_none() =>
        {
            Some(status.message().to_string())
        }
        Err(status) => return Err(kept(CliError::from(status))),
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CliError::failed(format!("remove {}: {e}", path.display()))),
    }
    if ctx.json {
        ctx.print_json(&json!({"logged_out": true, "revoked": note.is_none()}));
    } else if !ctx.quiet {
        match note {
            None => println!("logged out; the master revoked the token"),
            Some(why) => println!("logged out (the master no longer accepted the token: {why})"),
        }
    }
    Ok(())
}
