//! A real `redis-server` for a test: started on a free loopback port, stopped and started
//! again on the same port, killed when dropped; and one-off commands to look inside it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound on anything a test waits for; reaching it is a failure.
pub const WAIT: Duration = Duration::from_secs(15);

/// A `redis-server` of this test, killed when dropped.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

impl Redis {
    /// Starts one, or `None` (the test skips) when `redis-server` is not installed here.
    pub fn start(extra: &[&str]) -> Option<Redis> {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|d| d.join("redis-server").is_file())
        });
        if !found {
            assert!(
                std::env::var_os("TOLLGATE_REQUIRE_TOOLS").is_none()
                    && std::env::var_os("CI").is_none(),
                "redis-server is required here; scripts/test installs it"
            );
            eprintln!("skipping: no redis-server on PATH (scripts/test installs it)");
            return None;
        }
        let mut redis = Redis {
            child: None,
            port: 0,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        // A free port can be taken between finding it and redis binding it: try again.
        for _ in 0..5 {
            redis.port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if redis.spawn() {
                return Some(redis);
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts redis-server on `self.port`; whether it answers.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            if let Ok(reply) = self.try_cmd(&["PING"])
                && (reply == "PONG" || reply.starts_with("NOAUTH"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// One command over a fresh connection; its reply as text (`(nil)` for none).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args).unwrap()
    }

    fn try_cmd(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(WAIT))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "$" if rest == "-1" => "(nil)".to_owned(),
            "$" => {
                let mut body = vec![0; rest.parse::<usize>().unwrap() + 2];
                reader.read_exact(&mut body)?;
                String::from_utf8_lossy(&body[..body.len() - 2]).into_owned()
            }
            _ => rest.to_owned(),
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
