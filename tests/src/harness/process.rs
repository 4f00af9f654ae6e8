//! A child process that cannot outlive its test.
//!
//! [`Process`] owns a child: dropping it kills the child (SIGKILL) and reaps
//! it, and the child also gets SIGKILL from the kernel if the thread that
//! started it dies first (`PR_SET_PDEATHSIG`), so an aborted test run leaves
//! nothing behind. Keep the guard on the thread that spawned it, as tests do.
//!
//! Its stdout is read line by line on a thread: lines are kept (for
//! [`Process::wait_for_line`], how tests learn an address or a state change)
//! and written to `stdout.log`; stderr goes straight to `stderr.log`. Both are
//! in the process's [`ScratchDir`], which is kept when a test panics, and the
//! tail of each log is printed then.

use super::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Lines of stdout kept in memory; older ones are only in `stdout.log`.
const KEPT_LINES: usize = 100_000;
/// How long [`Process::wait`] lets the reader finish stdout after the exit.
const STDOUT_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Lines of each log printed when a test panics.
const TAIL_LINES: usize = 40;

pub struct Process {
    name: String,
    child: Child,
    lines: Arc<Mutex<Kept>>,
    /// Bumped for every line read, and closed at end of stdout.
    line_count: watch::Receiver<usize>,
    dir: ScratchDir,
}

impl Process {
    /// Starts `command` with stdout and stderr captured; `name` labels its
    /// logs and messages.
    pub fn spawn(name: &str, mut command: Command) -> Result<Process> {
        let dir = ScratchDir::new(name)?;
        let stderr = File::create(dir.path().join("stderr.log"))?;
        let stdout_log = File::create(dir.path().join("stdout.log"))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let stdout = child.stdout.take().context("child stdout is piped")?;
        let lines = Arc::new(Mutex::new(Kept::default()));
        let (count_tx, line_count) = watch::channel(0);
        let kept = lines.clone();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || read_lines(stdout, stdout_log, kept, count_tx))?;
        Ok(Process {
            name: name.to_string(),
            child,
            lines,
            line_count,
            dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stdout lines read so far (the most recent ones if there were very many).
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|kept| kept.lines.clone())
            .unwrap_or_default()
    }

    /// Waits, at most `within`, for a stdout line that `matches`; returns it.
    /// Fails early if stdout closes (the process exited) without one.
    pub async fn wait_for_line(
        &self,
        what: &str,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let mut seen = 0;
        let mut line_count = self.line_count.clone();
        let search = async {
            loop {
                // Checked before learning whether stdout closed, so that the
                // last lines are searched too.
                let closed = line_count.has_changed().is_err();
                if let Ok(kept) = self.lines.lock() {
                    if let Some(line) = kept.since(seen).find(|l| matches(l)) {
                        return Ok(line.clone());
                    }
                    seen = kept.total();
                }
                if closed {
                    bail!(
                        "{} closed its stdout without {what}\n{}",
                        self.name,
                        self.diagnostics()
                    );
                }
                // On close this returns at once; the next round searches the
                // last lines and then fails.
                let _ = line_count.changed().await;
            }
        };
        match tokio::time::timeout(within, search).await {
            Ok(found) => found,
            Err(_) => bail!(
                "timed out after {within:?} waiting for {what} from {}\n{}",
                self.name,
                self.diagnostics()
            ),
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling {}", self.name));
        }
        Ok(())
    }

    /// Sends SIGTERM: the graceful stop.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits, at most `within`, for the process to exit, and then (briefly)
    /// for its last stdout lines to be read, so that [`Process::lines`] has
    /// everything it printed.
    pub async fn wait(&mut self, within: Duration) -> Result<ExitStatus> {
        let what = format!("{} to exit", self.name);
        let status = super::wait::wait_until(&what, within, || {
            std::future::ready(self.child.try_wait().ok().flatten())
        })
        .await
        .with_context(|| self.diagnostics())?;
        // A child of the process may still hold stdout open: not for long.
        let mut count = self.line_count.clone();
        let end_of_stdout = async { while count.changed().await.is_ok() {} };
        let _ = tokio::time::timeout(STDOUT_AFTER_EXIT, end_of_stdout).await;
        Ok(status)
    }

    /// SIGKILL and reap: the crash case.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Where this process's logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The ends of both logs, for error messages.
    pub fn diagnostics(&self) -> String {
        let stdout = self.lines();
        let stdout_tail = stdout[stdout.len().saturating_sub(TAIL_LINES)..].join("\n");
        let stderr = self.stderr();
        let stderr_lines: Vec<&str> = stderr.lines().collect();
        let stderr_tail = stderr_lines[stderr_lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        format!(
            "--- {name} stdout (tail) ---\n{stdout_tail}\n--- {name} stderr (tail) ---\n{stderr_tail}\n--- full logs in {dir} (kept if the test panics) ---",
            name = self.name,
            dir = self.dir.path().display()
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        let _ = self.kill();
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// The stdout lines kept in memory, numbered from the first line ever read.
#[derive(Default)]
struct Kept {
    dropped: usize,
    lines: Vec<String>,
}

impl Kept {
    fn total(&self) -> usize {
        self.dropped + self.lines.len()
    }

    /// Lines from number `seen` on (or from the oldest one kept).
    fn since(&self, seen: usize) -> impl Iterator<Item = &String> {
        self.lines.iter().skip(seen.saturating_sub(self.dropped))
    }

    fn push(&mut self, line: String) {
        if self.lines.len() == KEPT_LINES {
            self.lines.drain(..KEPT_LINES / 2);
            self.dropped += KEPT_LINES / 2;
        }
        self.lines.push(line);
    }
}

fn read_lines(
    stdout: impl std::io::Read,
    mut log: File,
    kept: Arc<Mutex<Kept>>,
    count: watch::Sender<usize>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        let total = match kept.lock() {
            Ok(mut kept) => {
                kept.push(line);
                kept.total()
            }
            Err(_) => break,
        };
        count.send_replace(total);
    }
    // Dropping `count` closes the channel: waiters learn that stdout ended.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_awaited_and_the_child_dies_with_its_guard() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo first; echo ready; exec sleep 600"]);
        let process = Process::spawn("sh", command).expect("spawns");
        let line = process
            .wait_for_line("`ready`", Duration::from_secs(10), |l| l == "ready")
            .await
            .expect("ready");
        assert_eq!(line, "ready");
        assert_eq!(process.lines(), ["first", "ready"]);
        let proc_dir = PathBuf::from(format!("/proc/{}", process.pid()));
        assert!(proc_dir.exists());
        drop(process);
        assert!(!proc_dir.exists(), "killed and reaped on drop");
    }

    #[tokio::test]
    async fn an_exit_without_the_line_fails_at_once() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo nothing useful; echo oops >&2"]);
        let process = Process::spawn("sh", command).expect("spawns");
        let err = process
            .wait_for_line("`ready`", Duration::from_secs(60), |l| l == "ready")
            .await
            .expect_err("no such line");
        let message = format!("{err:#}");
        assert!(message.contains("closed its stdout"), "{message}");
        assert!(message.contains("oops"), "stderr is shown: {message}");
    }
}
