//! What the CLI's interop tests share: a `sipline` child process under
//! `timeout`, in a process group of its own, its output read line by line
//! (bounded waits), stopped on drop.

#![allow(dead_code, unreachable_pub)]

pub mod cmd;

use rustix::process::{kill_process_group, Pid, Signal};
use sipline_tests::kamailio::{programs, TempDir, USERS};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any one line may take to come.
const WAIT: Duration = Duration::from_secs(20);

/// `timeout 60 sipline ARGS`, its output as lines; stopped on drop.
pub struct Listener {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Listener {
    pub fn start(args: &[&str]) -> Listener {
        Listener::start_for(args, 60)
    }

    /// `timeout SECS sipline ARGS`.
    pub fn start_for(args: &[&str], secs: u32) -> Listener {
        let mut child = Command::new(&programs().timeout)
            .arg("--kill-after=2")
            .arg(secs.to_string())
            .arg(env!("CARGO_BIN_EXE_sipline"))
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipline");
        let (tx, lines) = mpsc::channel();
        for out in [Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>, {
            Box::new(child.stderr.take().expect("stderr"))
        }] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Listener { child, lines, seen: Vec::new() }
    }

    /// Takes in the lines printed so far, without waiting.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Waits (bounded) until `count` lines start with `prefix`.
    pub fn lines_starting(&mut self, prefix: &str, count: u32) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<String> = self.seen.iter().filter(|l| l.starts_with(prefix)).cloned().collect();
            if found.len() >= count as usize {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("{} of {count} lines starting {prefix:?}; output: {:#?}", found.len(), self.seen)
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SIGTERM to the group (timeout and sipline); SIGKILL if still there.
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}

impl Listener {
    /// The process id of `timeout`, whose child `sipline` is.
    pub fn timeout_pid(&self) -> u32 {
        self.child.id()
    }

    /// The address printed on the `bound TRANSPORT ADDR` line.
    pub fn bound(&mut self, transport: &str) -> SocketAddr {
        let line = self.lines_starting(&format!("bound {transport} "), 1);
        line[0].rsplit(' ').next().and_then(|a| a.parse().ok()).expect("bound address")
    }
}

/// Writes the harness's users (`user:password` lines) into `dir`; the
/// file's path, for `serve --users`.
pub fn users_file(dir: &TempDir) -> String {
    let users = USERS.iter().fold(String::new(), |s, u| s + u.name + ":" + u.password + "\n");
    dir.write("users", &users).to_str().expect("utf-8 path").to_owned()
}
