//! Where a credential comes from (`env`, `file`, `value`, `command`), and how it
//! is resolved.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a secret comes from: exactly one of `env`, `file`, `value` (inline values
/// are meant for local mock providers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    #[serde(default)]
    pub(super) env: Option<String>,
    #[serde(default)]
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) value: Option<String>,
    /// A command whose standard output is the secret (e.g. `[gcloud, auth,
    /// print-access-token]`), run at load and on every refresh.
    #[serde(default)]
    pub(super) command: Option<Vec<String>>,
}

/// Resolves one secret reference; problems are reported under `path`.
pub(super) fn resolve_secret(
    secret: &RawSecret,
    path: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match (&secret.env, &secret.file, &secret.value, &secret.command) {
        (None, None, None, Some(argv)) => {
            let Some((program, args)) = argv.split_first() else {
                problems.push(format!(
                    "{path}.command: expected a program and its arguments"
                ));
                return None;
            };
            match run_command(program, args, base) {
                Ok(out)
                    if out.status.success()
                        && !String::from_utf8_lossy(&out.stdout).trim().is_empty() =>
                {
                    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
                }
                Ok(out) => {
                    problems.push(format!(
                        "{path}.command: `{}` failed ({}): {}",
                        argv.join(" "),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("{path}.command: cannot run `{program}`: {e}"));
                    None
                }
            }
        }
        (None, None, Some(v), None) => Some(v.clone()),
        (Some(name), None, None, None) => {
            let v = env(name).filter(|v| !v.is_empty());
            if v.is_none() {
                problems.push(format!("{path}: environment variable {name} is not set"));
            }
            v
        }
        (None, Some(f), None, None) => {
            let f = if f.is_relative() {
                base.join(f)
            } else {
                f.clone()
            };
            match std::fs::read_to_string(&f) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Ok(_) => {
                    problems.push(format!("{path}: file {} is empty", f.display()));
                    None
                }
                Err(e) => {
                    problems.push(format!("{path}: cannot read {}: {e}", f.display()));
                    None
                }
            }
        }
        _ => {
            problems.push(format!(
                "{path}: expected exactly one of `env`, `file`, `value`, `command`"
            ));
            None
        }
    }
}

/// How long a credential command may run before it is killed.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs a credential command with a time limit: a hung `gcloud` must not hold a
/// reload forever.
fn run_command(
    program: &str,
    args: &[String],
    dir: &Path,
) -> std::io::Result<std::process::Output> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output()
}
