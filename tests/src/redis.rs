//! A Redis server of the test's own (issue 20): `redis-server` from the
//! Debian package that `scripts/install-interop-deps` installs, on a free
//! loopback port, its files (append-only log, no snapshots) in a temporary
//! directory, bounded in time by coreutils `timeout`, stopped on drop. It
//! can be stopped and started again on the same port with the same data,
//! as an operator's Redis restarts.
//!
//! ```no_run
//! let redis = sipline_tests::redis::Redis::start();
//! assert!(redis.ping());
//! println!("{}", redis.url());
//! ```

use crate::kamailio::{free_port, programs, wait_until, TempDir, LOOPBACK_V4};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or stopped) `redis-server`.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free loopback port and waits until it answers.
    pub fn start() -> Redis {
        let mut redis = Redis { port: free_port(&[LOOPBACK_V4]), dir: TempDir::new("redis"), child: None };
        redis.resume();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(LOOPBACK_V4, self.port)
    }

    /// Whether it answers `PING` now.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]).is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one command (RESP) and returns the raw reply, if it answers
    /// within a second.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            let _ = write!(request, "${}\r\n{a}\r\n", a.len());
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = vec![0u8; 65_536];
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    /// Stops it (SIGTERM: it writes its log and exits).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
        if !wait_until(Duration::from_secs(5), || !matches!(child.try_wait(), Ok(None))) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Starts it again on the same port with the same data, and waits
    /// until it answers.
    pub fn resume(&mut self) {
        let p = programs();
        let child = Command::new(&p.timeout)
            .arg("600")
            .arg(&p.redis_server)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--protected-mode", "no"])
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server: {e}"));
        self.child = Some(child);
        assert!(wait_until(Duration::from_secs(10), || self.ping()), "redis-server on {} did not answer", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
