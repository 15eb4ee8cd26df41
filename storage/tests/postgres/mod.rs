//! A PostgreSQL 15 server of a test's own (Debian's server binaries): a cluster made by
//! `initdb` in a temporary directory, listening on a loopback port, stopped when dropped. Shared
//! by the storage crate's tests and the server's (`tests/server/main.rs` includes this file).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server of its own, stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

/// PostgreSQL's programs refuse to run as root: as root they run as the `postgres` user.
fn command(program: &str) -> Command {
    let path = Path::new(BIN).join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::launch(None)
    }

    /// A server that accepts only TLS connections, with this certificate and key (PEM).
    pub fn start_with_tls(cert: &str, key: &str) -> Postgres {
        Postgres::launch(Some((cert, key)))
    }

    fn launch(tls: Option<(&str, &str)>) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let initdb = command("initdb")
            .args([
                "--auth=trust",
                "--username=catalog",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(initdb.success(), "initdb failed");
        if let Some((cert, key)) = tls {
            serve_tls_only(&data, cert, key);
        }
        let mut postgres = Postgres {
            dir,
            port: free_port(),
            server: None,
        };
        postgres.run();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server on its data directory and port, and waits until it is ready.
    fn run(&mut self) {
        let mut server = command("postgres")
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                // For tests that count the queries the store sends.
                "-c",
                "shared_preload_libraries=pg_stat_statements",
            ])
            .arg("-k")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The server logs to stderr: wait for the line that says it accepts connections, then
        // keep reading, so that it never blocks on a full pipe.
        let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("ready to accept connections"));
        assert!(ready, "PostgreSQL did not start");
        std::thread::spawn(move || lines.for_each(drop));
        self.server = Some(server);
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, crash
    /// recovery at the next start).
    pub fn crash(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = command("pg_ctl")
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .status();
            let _ = server.wait();
        }
    }

    /// Starts the server again after [`Postgres::crash`].
    pub fn restart(&mut self) {
        self.run();
    }

    /// Runs SQL in the `postgres` database, as a test that changes the store behind the
    /// server's back (a restored backup) does.
    pub fn psql(&self, sql: &str) {
        self.query(sql);
    }

    /// What SQL run as by [`Postgres::psql`] printed: its values unaligned, without headers.
    pub fn query(&self, sql: &str) -> String {
        let output = command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "catalog",
                "-d",
                "postgres",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql failed: {sql}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// The connection string of the server's `postgres` database, as its superuser.
    pub fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=catalog dbname=postgres",
            self.port
        )
    }
}

/// Configures the cluster in `data` to serve TLS with `cert` and `key`, and to refuse
/// connections without it.
fn serve_tls_only(data: &Path, cert: &str, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    let files = [
        ("server.crt", cert.to_string()),
        ("server.key", key.to_string()),
        (
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n".to_string(),
        ),
    ];
    for (name, text) in files {
        let path = data.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nssl = on\n");
    std::fs::write(conf, text).unwrap();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.crash();
    }
}
