//! Each job's check runs in a child process: the server re-executes its own
//! binary (`probegate serve run-job DIR`, hidden) on a request file in the
//! job's directory, under a memory limit and a wall-clock deadline. A model
//! file that makes the check abort, panic or exhaust memory ends that job as
//! `error` with the reason; the server, its queue and the next job go on.
//!
//! The limit is RLIMIT_DATA, not RLIMIT_AS: weights are memory-mapped
//! read-only, and counting those mappings would refuse any large model while
//! bounding nothing that can hurt the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::policy::Policy;
use crate::gate::report::{self, Outcome};
use crate::gate::risk::RiskModel;
use crate::gate::{self, GateRequest};

use super::store::{Job, JobState};

/// The request file the server writes and the child reads.
pub const REQUEST_FILE: &str = "request.json";
/// What the child decided, written atomically; absent when it died.
pub const OUTCOME_FILE: &str = "outcome.json";
/// The child's stderr, appended per attempt.
pub const LOG_FILE: &str = "check.log";

/// A test hook: `name=kind[,name=kind]` makes the check of the registry
/// entry `name` misbehave (`abort`, `panic`, `hog`: allocate until refused,
/// `sleep:N`: wait N seconds, then check), so the tests prove the isolation
/// and the recovery, not one parser's limits.
pub const FAULT_ENV: &str = "PROBEGATE_SERVE_TEST_FAULT";

/// One check, as the child runs it. Holds no secrets: the candidate is
/// already fetched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The repository or registered model, for logs and the test hook.
    pub name: String,
    pub base: String,
    pub candidate: String,
    pub monitors: PathBuf,
    pub policy: PathBuf,
    pub data: Option<PathBuf>,
    /// The gate's history file, appended by the check.
    pub history: Option<PathBuf>,
    /// The job's key for its history rows (a rerun after a crash appends once).
    #[serde(default)]
    pub run: Option<String>,
}

/// How a check ended, as the job records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finished {
    pub state: JobState,
    pub verdict: Outcome,
    pub exit_code: i32,
    pub summary: String,
    pub error: Option<String>,
    pub candidate: Option<String>,
}

impl Finished {
    /// Record this outcome on the job.
    pub fn apply(self, j: &mut Job) {
        j.state = self.state;
        j.verdict = Some(self.verdict);
        j.exit_code = Some(self.exit_code);
        j.summary = Some(self.summary);
        j.error = self.error;
        j.candidate = self.candidate;
    }

    /// The outcome a job's directory holds, if an attempt wrote one.
    pub fn read(dir: &Path) -> Option<Finished> {
        let text = std::fs::read_to_string(dir.join(OUTCOME_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Keep the outcome beside the reports, so a server that could not
    /// record it (a full disk) records it at its next start instead of
    /// running the check again.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Usage(e.to_string()))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::util::write_atomic(&dir.join(OUTCOME_FILE), &bytes)
    }

    /// The gate could not evaluate: `error` with the message.
    pub fn error(candidate: Option<String>, msg: &str) -> Self {
        Finished {
            state: JobState::Error,
            verdict: Outcome::Error,
            exit_code: Outcome::Error.exit_code(),
            summary: format!("ERROR: the gate could not evaluate: {msg}"),
            error: Some(msg.to_string()),
            candidate,
        }
    }
}

/// The child's side: run the request in `dir` and write the outcome there.
/// An error here is one the outcome could not be written for.
pub fn run_job(dir: &Path) -> Result<()> {
    let path = dir.join(REQUEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let req: CheckRequest = serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, e.line(), format!("not a check request: {e}")))?;
    fault(&req.name);
    let finished = match check(&req, dir) {
        Ok(f) => f,
        Err(e) => {
            let msg = e.to_string();
            // The report is best effort: the outcome below is what counts.
            let _ = report::write_error_report(dir, &msg);
            Finished::error(Some(req.candidate.clone()), &msg)
        }
    };
    finished.write(dir)
}

fn check(req: &CheckRequest, dir: &Path) -> Result<Finished> {
    let g = GateRequest {
        base: req.base.clone(),
        candidate: req.candidate.clone(),
        monitors: req.monitors.clone(),
        data: gate::revalidate::DataSource::named(req.data.clone()),
        policy: Policy::load(&req.policy)?,
        risk_model: RiskModel::default_model()?,
        full_revalidation: false,
        every_rung: false,
        condition: None,
        run: req.run.clone(),
        shard: None,
    };
    let out = gate::run_and_record(
        &g,
        Some(dir),
        req.history.as_deref(),
        &mut |_: &str, _: usize, _: usize| {},
    )?;
    let r = &out.report;
    Ok(Finished {
        state: JobState::Finished,
        verdict: r.verdict.into(),
        exit_code: Outcome::from(r.verdict).exit_code(),
        summary: report::verdict_line(r),
        error: None,
        candidate: Some(req.candidate.clone()),
    })
}

fn fault(name: &str) {
    let Ok(spec) = std::env::var(FAULT_ENV) else {
        return;
    };
    let kind = spec
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, k)| k.to_string());
    match kind.as_deref() {
        Some("abort") => std::process::abort(),
        Some("panic") => panic!("test fault for {name}"),
        Some("hog") => {
            let mut held = Vec::new();
            loop {
                // Reserved, never touched: the limit refuses the mapping itself.
                held.push(std::hint::black_box(Vec::<u8>::with_capacity(256 << 20)));
            }
        }
        Some(k) => {
            if let Some(n) = k.strip_prefix("sleep:").and_then(|n| n.parse().ok()) {
                std::thread::sleep(Duration::from_secs(n));
            }
        }
        None => {}
    }
}

/// The server's side: bounds on one child.
#[derive(Debug, Clone, Copy)]
pub struct ChildLimits {
    pub timeout: Duration,
    pub memory_mib: u64,
}

/// Run `cmd` in its own process group under `limits`, its stderr appended
/// to `log`. `Ok(Ok(()))`: it exited 0. `Ok(Err(why))`: it died, failed or
/// ran out of time (the whole group is killed), `why` says which.
/// Blocking: call it off the async workers.
pub fn run_limited(
    mut cmd: Command,
    log: &Path,
    limits: ChildLimits,
) -> Result<std::result::Result<(), String>> {
    use std::os::unix::process::CommandExt;
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    let start_len = err.metadata().map(|m| m.len()).unwrap_or(0);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0);
    let bytes = limits.memory_mib.saturating_mul(1 << 20) as libc::rlim_t;
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (setrlimit, prctl, getppid, _exit), with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A server killed outright takes its checks with it: a restart
            // reruns the job, and two runs must not share its directory.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot start the check process: {e}")))?;
    let pgid = child.id() as libc::pid_t;
    let deadline = Instant::now() + limits.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(Error::Usage(format!("waiting for the check process: {e}"))),
        }
    };
    // Whatever the child started goes with it.
    // SAFETY: kill has no memory-safety preconditions; ESRCH is harmless.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let Some(status) = status else {
        let _ = child.wait();
        return Ok(Err(format!(
            "the check timed out after {} s",
            limits.timeout.as_secs()
        )));
    };
    if status.success() {
        return Ok(Ok(()));
    }
    let tail = log_tail(log, start_len);
    Ok(Err(explain(status, &tail, limits.memory_mib)))
}

/// What this attempt wrote to the log, at most its last 64 KiB.
fn log_tail(log: &Path, from: u64) -> String {
    let Ok(bytes) = std::fs::read(log) else {
        return String::new();
    };
    let from = (from as usize).min(bytes.len());
    let from = from.max(bytes.len().saturating_sub(64 << 10));
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// Why a child that did not exit 0 ended, from its status and its stderr.
fn explain(status: std::process::ExitStatus, tail: &str, memory_mib: u64) -> String {
    use std::os::unix::process::ExitStatusExt;
    // Rust's allocator reports a refused allocation this way, then aborts.
    if tail.contains("memory allocation of ") {
        return format!("the check exceeded the memory limit of {memory_mib} MiB");
    }
    let panic = tail
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .nth(1)
        .map(str::trim)
        .filter(|l| !l.is_empty());
    if let Some(msg) = panic {
        return format!("the check panicked: {msg}");
    }
    match status.signal() {
        Some(s) => {
            let name = match s {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGKILL => " (SIGKILL: the kernel's out-of-memory killer, or an operator)",
                _ => "",
            };
            format!("the check was killed by signal {s}{name}")
        }
        None => {
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let last: String = last.chars().take(500).collect();
            format!(
                "the check process exited with status {}: {last}",
                status.code().unwrap_or(-1)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn run(script: &str, timeout_ms: u64) -> std::result::Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let limits = ChildLimits {
            timeout: Duration::from_millis(timeout_ms),
            memory_mib: 256,
        };
        run_limited(sh(script), &dir.path().join("log"), limits).unwrap()
    }

    #[test]
    fn exit_codes_signals_and_panics_are_explained() {
        assert_eq!(run("exit 0", 10_000), Ok(()));
        let e = run("echo oops >&2; exit 3", 10_000).unwrap_err();
        assert!(e.contains("status 3: oops"), "{e}");
        let e = run("kill -ABRT $$", 10_000).unwrap_err();
        assert!(e.contains("killed by signal 6 (SIGABRT)"), "{e}");
        let e = run(
            "echo \"thread 'main' panicked at src/x.rs:1:1:\" >&2; echo boom >&2; exit 101",
            10_000,
        )
        .unwrap_err();
        assert_eq!(e, "the check panicked: boom");
        let e = run(
            "echo 'memory allocation of 268435456 bytes failed' >&2; kill -ABRT $$",
            10_000,
        )
        .unwrap_err();
        assert_eq!(e, "the check exceeded the memory limit of 256 MiB");
    }

    #[test]
    fn the_memory_limit_applies_to_the_child() {
        // 256 MiB of data segment cannot hold a 512 MiB buffer.
        let e = run(
            "x=$(head -c 536870912 /dev/zero | tr '\\0' a); echo ${#x}",
            30_000,
        );
        assert!(e.is_err(), "{e:?}");
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let t = Instant::now();
        let e = run(
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
            1_000,
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(e, "the check timed out after 1 s");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        // The grandchild is gone (or a zombie awaiting init's reaping).
        std::thread::sleep(Duration::from_millis(200));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z"), "{stat}");
    }
}
