//! Destructive commands ask first: a person at a terminal types `yes`; a script passes `--yes`
//! (without a terminal and without `--yes`, nothing happens).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;

/// Goes on only when `what` is confirmed.
pub fn destructive(what: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("about to {what}: pass --yes to confirm");
    }
    let mut err = std::io::stderr();
    write!(err, "About to {what}. Type `yes` to go on: ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("not confirmed; nothing was done");
    }
    Ok(())
}
