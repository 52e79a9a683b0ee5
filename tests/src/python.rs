//! Real Python clients (redis-py, Flask-Session, python-socketio) run against shoal: the
//! interpreter of the venv `scripts/test` makes from `tests/python/requirements.txt`, the
//! scripts in `tests/python/`, and child processes with their output in files, bounded by
//! deadlines and killed when their handle drops.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The environment variable naming the Python interpreter to run (`scripts/test` sets it
/// to the venv's).
pub const PYTHON_ENV: &str = "SHOAL_PYTHON";

/// Lines of each output a failure message shows.
const TAIL_LINES: usize = 40;

fn workspace() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().map_or_else(|| tests.to_path_buf(), Path::to_path_buf)
}

/// Returns the Python interpreter to run the clients with: `SHOAL_PYTHON`, else
/// `target/python-venv/bin/python` in the workspace if it exists.
pub fn python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(PYTHON_ENV).filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let venv = workspace().join("target/python-venv/bin/python");
    venv.is_file().then_some(venv)
}

/// Returns the path of `name` in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    workspace().join("tests/python").join(name)
}

/// Returns a command that runs `tests/python/{name}` with `args`, unbuffered (so that its
/// output reaches the files at once) and without writing bytecode into the work tree.
pub fn python_command(name: &str, args: &[&str]) -> anyhow::Result<Command> {
    let interpreter = python().with_context(|| {
        format!(
            "no Python with the clients: run scripts/test (it makes target/python-venv from \
             tests/python/requirements.txt) or set {PYTHON_ENV}"
        )
    })?;
    anyhow::ensure!(
        interpreter.is_file(),
        "{} does not exist: run scripts/test (it makes target/python-venv) or set {PYTHON_ENV} \
         to a Python with tests/python/requirements.txt installed",
        interpreter.display()
    );
    let mut command = Command::new(interpreter);
    command
        .arg(script(name))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("REDIS_URL");
    Ok(command)
}

/// A child process whose standard output and error go to files; SIGKILLed when dropped
/// (then, if the thread panics, the tail of its output is printed).
#[derive(Debug)]
pub struct Background {
    name: String,
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Background {
    /// Starts `command` as `name`, its output in `dir/{name}.stdout` and `.stderr`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> anyhow::Result<Self> {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?)
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Self { name: name.to_string(), child: Some(child), stdout_path, stderr_path })
    }

    /// Returns everything the process has written to its standard output.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Returns everything the process has written to its standard error.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Returns the last lines of both outputs, for a failure message.
    pub fn output_tail(&self) -> String {
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
        };
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            tail(self.stdout()),
            self.name,
            tail(self.stderr())
        )
    }

    /// Returns the exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Waits up to `deadline` for the process to exit by itself and returns its status;
    /// past the deadline it is killed and the wait fails with its output.
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().with_context(|| format!("{} was killed", self.name))?;
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > deadline {
                self.kill();
                bail!("{} did not exit within {deadline:?}\n{}", self.name, self.output_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the process and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.output_tail());
        }
    }
}

/// What a script that ran to its end said.
#[derive(Debug)]
pub struct ScriptOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptOutput {
    /// Returns the last line of standard output that parses as JSON.
    pub fn last_json(&self) -> anyhow::Result<serde_json::Value> {
        self.stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .with_context(|| format!("no JSON line in the output\n{self}"))
    }
}

impl std::fmt::Display for ScriptOutput {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "exit: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `tests/python/{name}` with `args` and `envs`, its output in files in `dir`, and
/// returns what it said; a script still running after `deadline` is killed and the run
/// fails with its output so far.
pub async fn run_script(
    dir: &Path,
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> anyhow::Result<ScriptOutput> {
    let mut command = python_command(name, args)?;
    command.envs(envs.iter().copied());
    let stem = name.trim_end_matches(".py");
    let mut process = Background::spawn(stem, command, dir)?;
    let status = process.wait_exit(deadline).await?;
    Ok(ScriptOutput { status, stdout: process.stdout(), stderr: process.stderr() })
}
