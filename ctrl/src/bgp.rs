//! Announcing the VIPs over BGP: the controller decides, BIRD speaks BGP.
//!
//! The LB node's BIRD has a static protocol (default `marllb_vip`) holding a
//! route for each VIP, **disabled in its configuration**, and a BGP session
//! to the router exporting it. The controller enables the protocol (the VIPs
//! are announced) while the node can serve, and disables it (withdrawn)
//! otherwise, by writing `enable NAME` / `disable NAME` on BIRD's control
//! socket: no `birdc` process, one short exchange per transition.
//!
//! # When the node can serve
//!
//! Its data plane's heartbeat moved within `dp_timeout` **and** at least one
//! backend takes flows. `rise` such cycles in a row announce, `fall`
//! cycles without withdraw (hysteresis, so a slow cycle does not flap the
//! route). Nothing is announced before the first `rise` cycles. The desired
//! state is re-sent every `reassert` (a restarted BIRD comes up with the
//! protocol disabled again) and after a failed exchange, each cycle until
//! BIRD confirms it.
//!
//! When the controller itself stops, it withdraws (SIGTERM), and so it does
//! when its data plane's region is closed or replaced (it announces again
//! after the rise count on the new region); if the controller dies, the
//! route stays with BIRD: the data plane's watchdog keeps the node serving
//! (equal weights over the backends not down), which is what the route
//! promises. A dead data plane or a dead BIRD withdraws through the hold time.
//!
//! # The control socket
//!
//! BIRD greets with `0001 BIRD <version> ready.`; each reply is lines
//! `NNNN-text` (more follow) ending with one `NNNN text`. `0xxx` is success
//! (`0008` already disabled, `0009` disabled, `0010` already enabled, `0011`
//! enabled), `8xxx` a run-time error (`8003 No protocols match`), `9xxx` a
//! parse error.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `[bgp]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpSettings {
    /// BIRD's control socket.
    pub socket: PathBuf,
    /// BIRD protocol holding the VIP routes.
    pub protocol: String,
    /// Cycles able to serve before announcing.
    pub rise: u32,
    /// Cycles unable to serve before withdrawing.
    pub fall: u32,
    /// The data plane counts as alive while its heartbeat moved this recently.
    pub dp_timeout: Duration,
    /// The desired state is sent again this often.
    pub reassert: Duration,
    /// Bound on one exchange with BIRD.
    pub timeout: Duration,
}

impl BgpSettings {
    /// Defaults for `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            protocol: "marllb_vip".into(),
            rise: 3,
            fall: 2,
            dp_timeout: Duration::from_millis(500),
            reassert: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
        }
    }
}

/// Why an exchange with BIRD failed.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    /// Connect, read or write.
    #[error("{path}: {source}")]
    Io {
        /// Socket.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// BIRD answered with an error code.
    #[error("BIRD refused `{command}`: {code} {text}")]
    Refused {
        /// The command.
        command: String,
        /// Reply code.
        code: u16,
        /// Its text.
        text: String,
    },
    /// Not BIRD's protocol.
    #[error("{path}: unexpected reply {line:?}")]
    Protocol {
        /// Socket.
        path: PathBuf,
        /// The line.
        line: String,
    },
}

/// One reply: the final code and the text of every line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Code of the last line.
    pub code: u16,
    /// Text of all lines.
    pub text: String,
}

fn read_reply(r: &mut impl BufRead, path: &Path) -> Result<Reply, BirdError> {
    let mut text = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(|source| BirdError::Io {
            path: path.into(),
            source,
        })?;
        if n == 0 {
            return Err(BirdError::Protocol {
                path: path.into(),
                line: "(connection closed)".into(),
            });
        }
        let l = line.trim_end_matches(['\r', '\n']);
        // Continuation of the previous code's text.
        if let Some(rest) = l.strip_prefix(' ') {
            text.push_str(rest);
            text.push('\n');
            continue;
        }
        let code = l
            .get(..4)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| BirdError::Protocol {
                path: path.into(),
                line: l.into(),
            })?;
        let sep = l.as_bytes().get(4).copied();
        text.push_str(l.get(5..).unwrap_or(""));
        text.push('\n');
        match sep {
            Some(b'-') => continue,
            Some(b' ') | None => {
                return Ok(Reply {
                    code,
                    text: text.trim_end().to_string(),
                })
            }
            Some(_) => {
                return Err(BirdError::Protocol {
                    path: path.into(),
                    line: l.into(),
                })
            }
        }
    }
}

/// Sends one command on BIRD's control socket and returns its reply
/// (error codes are an error).
pub fn bird_command(socket: &Path, command: &str, timeout: Duration) -> Result<Reply, BirdError> {
    let io = |source| BirdError::Io {
        path: socket.into(),
        source,
    };
    let s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut r = BufReader::new(&s);
    let hello = read_reply(&mut r, socket)?;
    if hello.code != 1 {
        return Err(BirdError::Protocol {
            path: socket.into(),
            line: format!("{:04} {}", hello.code, hello.text),
        });
    }
    (&s).write_all(format!("{command}\n").as_bytes())
        .map_err(io)?;
    let reply = read_reply(&mut r, socket)?;
    if reply.code >= 8000 {
        return Err(BirdError::Refused {
            command: command.into(),
            code: reply.code,
            text: reply.text,
        });
    }
    Ok(reply)
}

/// What a cycle changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Announced from now on.
    Announce,
    /// Withdrawn from now on.
    Withdraw,
}

/// The announcement's state machine and its BIRD link.
#[derive(Debug)]
pub struct Announcer {
    cfg: BgpSettings,
    /// What the node should do (after hysteresis).
    want: bool,
    /// What BIRD last confirmed (`None`: nothing confirmed yet).
    confirmed: Option<bool>,
    ok_run: u32,
    bad_run: u32,
    last_sent: Option<Instant>,
    last_error: Option<String>,
}

impl Announcer {
    /// Withdrawn until `rise` good cycles.
    pub fn new(cfg: BgpSettings) -> Self {
        Self {
            cfg,
            want: false,
            confirmed: None,
            ok_run: 0,
            bad_run: 0,
            last_sent: None,
            last_error: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &BgpSettings {
        &self.cfg
    }

    /// `true` while the VIPs should be announced.
    pub fn announced(&self) -> bool {
        self.want
    }

    /// Whether BIRD confirmed the current state.
    pub fn in_sync(&self) -> bool {
        self.confirmed == Some(self.want)
    }

    /// Hysteresis only (no I/O): one cycle's verdict.
    pub fn observe(&mut self, can_serve: bool) -> Option<Transition> {
        if can_serve {
            self.bad_run = 0;
            self.ok_run = self.ok_run.saturating_add(1);
            if !self.want && self.ok_run >= self.cfg.rise.max(1) {
                self.want = true;
                return Some(Transition::Announce);
            }
        } else {
            self.ok_run = 0;
            self.bad_run = self.bad_run.saturating_add(1);
            if self.want && self.bad_run >= self.cfg.fall.max(1) {
                self.want = false;
                return Some(Transition::Withdraw);
            }
        }
        None
    }

    /// One cycle: the verdict, then the exchange with BIRD if the state is
    /// not confirmed or a re-assertion is due. Returns the transition, if any.
    pub fn cycle(&mut self, can_serve: bool, now: Instant) -> Option<Transition> {
        let t = self.observe(can_serve);
        match t {
            Some(Transition::Announce) => tracing::info!(
                protocol = %self.cfg.protocol,
                cycles = self.cfg.rise,
                "BGP: announcing the VIPs (data plane alive, a backend up)"
            ),
            Some(Transition::Withdraw) => tracing::warn!(
                protocol = %self.cfg.protocol,
                cycles = self.cfg.fall,
                "BGP: withdrawing the VIPs (data plane silent or no backend up)"
            ),
            None => {}
        }
        let due = self
            .last_sent
            .is_none_or(|s| now.saturating_duration_since(s) >= self.cfg.reassert);
        // Nothing to say before the first decision: BIRD starts withdrawn.
        let started = self.want || self.confirmed.is_some() || t.is_some();
        if started && (!self.in_sync() || due) {
            self.send(now);
        }
        t
    }

    /// Withdraws now (the controller is stopping).
    pub fn withdraw_now(&mut self) {
        if self.want || self.confirmed == Some(true) {
            self.want = false;
            self.send(Instant::now());
            tracing::info!(protocol = %self.cfg.protocol, "BGP: VIPs withdrawn (controller stopping, or its data plane's region ended)");
        }
    }

    fn send(&mut self, now: Instant) {
        let cmd = format!(
            "{} {}",
            if self.want { "enable" } else { "disable" },
            self.cfg.protocol
        );
        self.last_sent = Some(now);
        match bird_command(&self.cfg.socket, &cmd, self.cfg.timeout) {
            Ok(_) => {
                if self.last_error.take().is_some() {
                    tracing::info!(command = %cmd, "BGP: BIRD answers again");
                }
                self.confirmed = Some(self.want);
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(command = %cmd, error = %msg, "BGP: BIRD did not take the command; retrying every cycle");
                }
                self.last_error = Some(msg);
                self.confirmed = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// A BIRD stand-in: greets, logs commands, answers `enable`/`disable` of
    /// `marllb_vip` as BIRD does and anything else with 8003.
    fn fake_bird(path: &Path) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        let h = std::thread::spawn(move || {
            let mut enabled = false;
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                s.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).unwrap_or(0);
                let cmd = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                if cmd == "quit" {
                    break;
                }
                let reply = match cmd.as_str() {
                    "enable marllb_vip" if enabled => "0010 marllb_vip: already enabled\n",
                    "enable marllb_vip" => {
                        enabled = true;
                        "0011 marllb_vip: enabled\n"
                    }
                    "disable marllb_vip" if !enabled => "0008 marllb_vip: already disabled\n",
                    "disable marllb_vip" => {
                        enabled = false;
                        "0009 marllb_vip: disabled\n"
                    }
                    _ => "8003 No protocols match\n",
                };
                log2.lock().unwrap().push(cmd);
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        (log, h)
    }

    #[test]
    fn replies_are_parsed_with_continuations() {
        let text = b"0001 BIRD 2.0.12 ready.\n1002-bgp1  BGP  up\n 2.0 extra\n0000 \n";
        let mut r = &text[..];
        let p = Path::new("x");
        assert_eq!(read_reply(&mut r, p).unwrap().code, 1);
        let rep = read_reply(&mut r, p).unwrap();
        assert_eq!(rep.code, 0);
        assert!(rep.text.contains("bgp1") && rep.text.contains("2.0 extra"));
        let mut bad = &b"hello\n"[..];
        assert!(matches!(
            read_reply(&mut bad, p),
            Err(BirdError::Protocol { .. })
        ));
    }

    #[test]
    fn hysteresis_then_commands_on_the_socket() {
        let dir = std::env::temp_dir().join(format!("marllb-bgp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("bird.ctl");
        let (log, h) = fake_bird(&sock);
        let mut a = Announcer::new(BgpSettings::new(sock.clone()));
        let t0 = Instant::now();
        // Nothing sent before the rise count.
        assert_eq!(a.cycle(true, t0), None);
        assert_eq!(a.cycle(true, t0), None);
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(a.cycle(true, t0), Some(Transition::Announce));
        assert!(a.announced() && a.in_sync());
        // One bad cycle does not withdraw; two do.
        assert_eq!(a.cycle(false, t0), None);
        assert_eq!(a.cycle(true, t0), None);
        assert_eq!(a.cycle(false, t0), None);
        assert_eq!(a.cycle(false, t0), Some(Transition::Withdraw));
        assert!(!a.announced() && a.in_sync());
        // Re-asserted after `reassert`.
        let later = t0 + Duration::from_secs(11);
        a.cycle(false, later);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "enable marllb_vip",
                "disable marllb_vip",
                "disable marllb_vip"
            ]
        );
        // An unknown protocol is an error naming the code; not confirmed.
        let e = bird_command(&sock, "enable nope", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("8003"), "{e}");
        let _ = bird_command(&sock, "quit", Duration::from_millis(200));
        h.join().unwrap();
        // BIRD gone: the state stays wanted, unconfirmed, retried each cycle.
        let mut b = Announcer::new(BgpSettings {
            rise: 1,
            ..BgpSettings::new(sock.clone())
        });
        assert_eq!(b.cycle(true, t0), Some(Transition::Announce));
        assert!(b.announced() && !b.in_sync());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
