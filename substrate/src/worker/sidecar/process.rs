//! One sidecar process: its pipes, a thread reading its frames, a thread keeping its log.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fstore_flows::FlowSpec;
use fstore_proto::sidecar as pb;
use prost::Message;

use super::values;

/// The protocol version this worker speaks.
pub(super) const PROTOCOL: u32 = 1;
/// Frames larger than this are refused (the protocol's bound).
pub(super) const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Lines of the sidecar's log kept for error messages.
const LOG_LINES: usize = 20;

#[derive(Debug)]
pub(super) struct Process {
    child: Child,
    /// Frames for the writer thread: a sidecar that stops reading blocks that thread,
    /// never the batch, which times out.
    writes: SyncSender<Vec<u8>>,
    frames: Receiver<Result<Vec<u8>, String>>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Starts `command` and reads its Hello within `timeout`: the process and its specs.
    pub(super) fn start(
        command: &[String],
        timeout: Duration,
    ) -> Result<(Process, Vec<FlowSpec>), String> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| "an empty command".to_string())?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {program}: {e} (is --venv a venv with fstore-flow installed?)"
                )
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err("the sidecar's pipes could not be opened".into());
        };
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let keep = log.clone();
        let pid = child.id();
        let logger = std::thread::Builder::new()
            .name("sidecar-log".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    tracing::info!(target: "fstore::sidecar", pid, "{line}");
                    let mut kept = keep.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() == LOG_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        // Bounded: the sidecar answers one batch at a time.
        let (tx, frames) = sync_channel(1);
        let reader = std::thread::Builder::new()
            .name("sidecar-frames".into())
            .spawn(move || {
                let mut stdout = stdout;
                loop {
                    let frame = read_frame(&mut stdout);
                    let end = frame.is_err();
                    if tx.send(frame).is_err() || end {
                        return;
                    }
                }
            });
        let (writes, outgoing) = sync_channel::<Vec<u8>>(1);
        let writer = std::thread::Builder::new()
            .name("sidecar-writes".into())
            .spawn(move || write_frames(stdin, outgoing));
        if let Some(e) = [spawned(logger), spawned(reader), spawned(writer)]
            .into_iter()
            .flatten()
            .next()
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot start the sidecar's threads: {e}"));
        }
        let mut process = Process {
            child,
            writes,
            frames,
            log,
        };
        let hello = match process.receive(timeout) {
            Ok(pb::FromSidecar {
                kind: Some(pb::from_sidecar::Kind::Hello(hello)),
            }) => hello,
            Ok(other) => {
                process.kill();
                return Err(format!("its first frame is not a Hello: {other:?}"));
            }
            Err(e) => {
                process.kill();
                return Err(format!("{e}{}", process.log_note()));
            }
        };
        if hello.protocol != PROTOCOL {
            process.kill();
            return Err(format!(
                "it speaks protocol {}, this worker {PROTOCOL}: install the fstore-flow that matches this worker",
                hello.protocol
            ));
        }
        let specs = hello
            .flows
            .into_iter()
            .map(values::spec)
            .collect::<Result<Vec<_>, _>>();
        match specs {
            Ok(specs) if !specs.is_empty() => Ok((process, specs)),
            Ok(_) => {
                process.kill();
                Err("it declares no flow".into())
            }
            Err(e) => {
                process.kill();
                Err(e)
            }
        }
    }

    /// Sends `message` and waits for the next frame at most `timeout`.
    pub(super) fn call(
        &mut self,
        message: &pb::ToSidecar,
        timeout: Duration,
    ) -> Result<pb::FromSidecar, String> {
        let body = message.encode_to_vec();
        let len = u32::try_from(body.len()).map_err(|_| "a batch over 4 GiB".to_string())?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        self.writes
            .try_send(frame)
            .map_err(|_| format!("the sidecar does not read its input{}", self.log_note()))?;
        self.receive(timeout)
    }

    fn receive(&mut self, timeout: Duration) -> Result<pb::FromSidecar, String> {
        let frame = match self.frames.recv_timeout(timeout) {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => return Err(self.exited(&e)),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("the sidecar did not answer within {timeout:?}"));
            }
            Err(RecvTimeoutError::Disconnected) => return Err(self.exited("its output closed")),
        };
        pb::FromSidecar::decode(frame.as_slice())
            .map_err(|e| format!("the sidecar sent a frame that is not a message ({e})"))
    }

    /// What to say of a process whose output ended.
    fn exited(&mut self, why: &str) -> String {
        // Its stderr thread may still be reading the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            _ => "closed its output".to_string(),
        };
        format!("the sidecar {status}: {why}{}", self.log_note())
    }

    pub(super) fn log_tail(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn log_note(&self) -> String {
        let tail = self.log_tail();
        match tail.last() {
            Some(_) => format!("; its log ends: {}", tail.join(" | ")),
            None => String::new(),
        }
    }

    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The error of a thread that did not start, if it did not.
fn spawned(thread: std::io::Result<JoinHandle<()>>) -> Option<std::io::Error> {
    thread.err()
}

/// Writes each frame to the sidecar's input until the channel or the pipe closes (the
/// process exited or was killed).
fn write_frames(mut stdin: ChildStdin, frames: Receiver<Vec<u8>>) {
    for frame in frames {
        if stdin
            .write_all(&frame)
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return;
        }
    }
}

fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|e| format!("its output ended ({e})"))?;
    let n = u32::from_be_bytes(head) as usize;
    if n > MAX_FRAME {
        return Err(format!(
            "it sent a frame of {n} bytes, over the {MAX_FRAME} limit"
        ));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)
        .map_err(|e| format!("its output ended inside a frame ({e})"))?;
    Ok(body)
}
