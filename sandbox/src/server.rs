//! The cluster on disk and the PostgreSQL programs that create, start and stop it.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User, geteuid};
use tempfile::TempDir;

use super::SandboxError;

/// The programs every sandbox needs; a folder counts only if it has all of them.
const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// How much of the server log goes into a start-up error.
const LOG_TAIL_LINES: usize = 40;

/// The folder with PostgreSQL's server programs.
pub(super) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// `$POOLWARDEN_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
    /// `pg_config --bindir`, else the first folder on `PATH` with the programs.
    pub(super) fn find() -> Result<Binaries, SandboxError> {
        if let Some(dir) = std::env::var_os("POOLWARDEN_PG_BIN") {
            let dir = PathBuf::from(dir);
            // An explicit choice that is wrong should say so, not quietly use something else.
            if let Some(missing) = PROGRAMS.iter().find(|p| !is_executable(&dir.join(p))) {
                return Err(SandboxError::BadBinDir {
                    path: dir,
                    missing: (*missing).to_string(),
                });
            }
            return Ok(Binaries { dir });
        }
        let found = newest_debian_bin_dir()
            .or_else(pg_config_bin_dir)
            .or_else(path_bin_dir)
            .ok_or(SandboxError::NoBinaries)?;
        Ok(Binaries { dir: found })
    }

    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn has_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|p| is_executable(&dir.join(p)))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Debian and Ubuntu install each major version in /usr/lib/postgresql/MAJOR/bin.
fn newest_debian_bin_dir() -> Option<PathBuf> {
    let entries = fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            // "9.6" sorts below "10" only when compared as numbers.
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_programs(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn pg_config_bin_dir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    has_programs(&dir).then_some(dir)
}

fn path_bin_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| has_programs(dir))
}

/// The OS user the servers run as when we are root, since PostgreSQL (and PgBouncer) refuse to
/// run as root.
pub(super) struct ServerUser {
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

impl ServerUser {
    /// Makes `command` run as this user.
    pub(super) fn apply(&self, command: &mut Command) {
        // std drops supplementary groups too when it switches uid as root.
        command
            .uid(self.uid.as_raw())
            .gid(self.gid.as_raw())
            .env("HOME", &self.home)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres");
    }

    /// Hands `path` and everything under it to this user.
    pub(super) fn chown_tree(&self, path: &Path) -> Result<(), SandboxError> {
        let context = || format!("handing {} to the postgres user", path.display());
        std::os::unix::fs::lchown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .map_err(|e| SandboxError::io(context(), e))?;
        let metadata = fs::symlink_metadata(path).map_err(|e| SandboxError::io(context(), e))?;
        if metadata.is_dir() {
            for entry in fs::read_dir(path).map_err(|e| SandboxError::io(context(), e))? {
                let entry = entry.map_err(|e| SandboxError::io(context(), e))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// `None` unless we are root; then the `postgres` OS user.
pub(super) fn server_user() -> Result<Option<ServerUser>, SandboxError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(ServerUser {
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
        })),
        Ok(None) => Err(SandboxError::NoServerUser),
        Err(e) => Err(SandboxError::io(
            "looking up the `postgres` OS user",
            std::io::Error::from(e),
        )),
    }
}

/// Why one `pg_ctl start` did not work.
pub(super) enum StartFailure {
    /// Someone else bound the port after we found it free: worth another try.
    PortTaken,
    Failed {
        pg_ctl_output: String,
        log_tail: String,
    },
    Error(SandboxError),
}

/// A cluster in a temporary directory:
///
/// ```text
/// <root>/data            the cluster (PGDATA)
/// <root>/postgres.log    the server log
/// <root>/.s.PGSQL.<port> the Unix socket
/// <root>/tls/            certificates, when TLS is on
/// ```
///
/// Dropping it stops the server, if running, and deletes the directory.
pub(super) struct Cluster {
    root: TempDir,
    binaries: Binaries,
    user: Option<ServerUser>,
}

impl Cluster {
    pub(super) fn create(binaries: Binaries) -> Result<Cluster, SandboxError> {
        let user = server_user()?;
        let root = tempfile::Builder::new()
            .prefix("poolwarden-pg-")
            .tempdir()
            .map_err(|e| SandboxError::io("creating the sandbox's temporary directory", e))?;
        Ok(Cluster {
            root,
            binaries,
            user,
        })
    }

    pub(super) fn root(&self) -> &Path {
        self.root.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.root().join("postgres.log")
    }

    /// A command for a PostgreSQL program, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.binaries.program(program));
        command
            .current_dir(self.root())
            .stdin(Stdio::null())
            // Client settings from the caller's environment must not leak into the server tools.
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        if let Some(user) = &self.user {
            user.apply(&mut command);
        }
        command
    }

    /// Runs initdb. Everything already in the directory (certificates...) is handed over to the
    /// server's user first.
    pub(super) fn initdb(&self, superuser_password: &str) -> Result<(), SandboxError> {
        let pwfile = self.root().join("pwfile");
        fs::write(&pwfile, format!("{superuser_password}\n"))
            .map_err(|e| SandboxError::io(format!("writing {}", pwfile.display()), e))?;
        self.chown_tree(self.root())?;
        let mut command = self.command("initdb");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--no-locale", "--no-sync"]);
        let result = run(command);
        // The password is well known, but there is no reason to keep the file around.
        let _ = fs::remove_file(&pwfile);
        result.map(drop)
    }

    /// Appends `conf` to postgresql.conf and replaces pg_hba.conf with `hba`.
    pub(super) fn configure(&self, conf: &str, hba: &str) -> Result<(), SandboxError> {
        let conf_path = self.data_dir().join("postgresql.conf");
        // Appending to and truncating the files initdb made keeps them owned by the server user.
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .map_err(|e| SandboxError::io(format!("writing {}", conf_path.display()), e))?;
        let hba_path = self.data_dir().join("pg_hba.conf");
        fs::write(&hba_path, hba)
            .map_err(|e| SandboxError::io(format!("writing {}", hba_path.display()), e))
    }

    pub(super) fn start(&mut self, port: u16) -> Result<(), StartFailure> {
        let log = self.log_path();
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut command = self.command("pg_ctl");
        command
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {port}"))
            .arg("start");
        // pg_ctl sends the server's own output to the log, so capturing pg_ctl's cannot hang.
        let output = command
            .output()
            .map_err(|e| StartFailure::Error(SandboxError::io("running pg_ctl start", e)))?;
        if output.status.success() {
            return Ok(());
        }
        let log_tail = read_tail(&log, log_start, LOG_TAIL_LINES);
        if log_tail.contains("Address already in use") {
            return Err(StartFailure::PortTaken);
        }
        Err(StartFailure::Failed {
            pg_ctl_output: combined_output(&output),
            log_tail,
        })
    }

    /// Stops the server, if it runs, as fast as possible.
    fn stop(&self) {
        let pid_file = self.data_dir().join("postmaster.pid");
        if !pid_file.exists() {
            return;
        }
        let mut command = self.command("pg_ctl");
        command
            .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match command.status() {
            Ok(status) if status.success() => {}
            outcome => {
                tracing::warn!(?outcome, "pg_ctl stop failed; signalling the postmaster");
                kill_postmaster(&pid_file);
            }
        }
    }

    /// Hands `path` and everything under it to the server's user.
    fn chown_tree(&self, path: &Path) -> Result<(), SandboxError> {
        match &self.user {
            Some(user) => user.chown_tree(path),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        // TempDir's own drop then deletes the directory.
    }
}

/// The fallback when pg_ctl cannot stop the server: SIGQUIT is PostgreSQL's immediate shutdown.
fn kill_postmaster(pid_file: &Path) {
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
    else {
        return;
    };
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGQUIT).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while kill(pid, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion; a failure carries its output.
pub(crate) fn run(mut command: Command) -> Result<Output, SandboxError> {
    let described = describe(&command);
    let output = command
        .output()
        .map_err(|e| SandboxError::io(format!("running `{described}`"), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(SandboxError::Command {
            command: described,
            status: output.status.to_string(),
            output: combined_output(&output),
        })
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn combined_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim_end());
    }
    text
}

/// The last `lines` lines of `path` from byte `from` on (the log of this start attempt only).
pub(crate) fn read_tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    let read = fs::File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if let Err(e) = read {
        return format!("(could not read the log: {e})");
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `postgresql.conf` lines for the caller's extra settings.
pub(super) fn render_settings(settings: &[(String, String)]) -> Result<String, SandboxError> {
    let mut out = String::new();
    for (name, value) in settings {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid_name {
            return Err(SandboxError::InvalidSetting {
                name: name.clone(),
                reason: "a setting name has only letters, digits, '_' and '.'",
            });
        }
        if value.contains(['\n', '\r']) {
            return Err(SandboxError::InvalidSetting {
                name: name.clone(),
                reason: "a value cannot span lines",
            });
        }
        out.push_str(&format!("{name} = {}\n", quote_conf(value)));
    }
    Ok(out)
}

/// A `postgresql.conf` string value, which accepts any setting's value, numbers included.
pub(super) fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_quoted_and_checked() {
        let rendered = render_settings(&[
            ("work_mem".to_string(), "4MB".to_string()),
            ("application_name".to_string(), r"it's a \ test".to_string()),
        ])
        .unwrap();
        assert_eq!(
            rendered,
            "work_mem = '4MB'\napplication_name = 'it''s a \\\\ test'\n"
        );
        assert!(render_settings(&[("bad name".to_string(), "1".to_string())]).is_err());
        assert!(render_settings(&[("x".to_string(), "1\nssl = off".to_string())]).is_err());
    }

    #[test]
    fn log_tail_keeps_the_last_lines_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, "old\na\nb\nc\n").unwrap();
        assert_eq!(read_tail(&path, 4, 2), "b\nc");
        assert_eq!(read_tail(&path, 4, 10), "a\nb\nc");
    }
}
