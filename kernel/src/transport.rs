//! The kernel's ZeroMQ sockets, over libzmq (the `zmq` crate), the library ipykernel uses.
//!
//! A ZeroMQ socket must stay on one thread, and the kernel's replies and iopub messages come
//! from many tasks and threads, so each socket gets a thread of its own. It sleeps in
//! `zmq::poll` on the socket and on a wake-up pipe: what arrives goes to a tokio channel, and a
//! message queued with [`Outbox::send`] writes a byte to the pipe and goes out at once.
//!
//! Every socket refuses frames larger than [`MAX_MESSAGE_SIZE`]. libzmq drops a peer that
//! announces one as soon as it reads the frame's header, before it reserves any memory, so a
//! peer that can reach a port cannot exhaust the kernel's memory before it is authenticated.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::sync::mpsc;

/// The largest frame a socket accepts. A front end's largest messages are comm messages and
/// cells, kilobytes to a few megabytes; 64 MiB is far above anything legitimate, and the buffer
/// libzmq reserves for a frame it accepts can be no larger.
pub const MAX_MESSAGE_SIZE: i64 = 64 << 20;

/// How long [`Sockets`] retries a bind while the port is in use: on a restart Jupyter reuses the
/// ports, and when this kernel is a spare (spare.rs) the kernel before it may still be exiting.
const BIND_RETRY: Duration = Duration::from_secs(10);

/// A bound socket that receives: its messages (identity frames first on a ROUTER) and where to
/// queue replies.
pub struct Bound {
    pub incoming: mpsc::UnboundedReceiver<Vec<Bytes>>,
    pub outgoing: Outbox,
}

/// Queues messages for a socket's thread.
#[derive(Clone)]
pub struct Outbox {
    queue: std_mpsc::Sender<Command>,
    wake: Arc<UnixStream>,
}

enum Command {
    Send(Vec<Bytes>),
    /// Close the socket, then say so.
    Close(std_mpsc::Sender<()>),
}

impl Outbox {
    /// Queues `frames` as one multipart message (dropped once the socket is closed).
    pub fn send(&self, frames: Vec<Bytes>) {
        self.command(Command::Send(frames));
    }

    fn command(&self, command: Command) {
        if self.queue.send(command).is_ok() {
            // A full pipe already holds a wake-up, so a write that would block is not needed.
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

/// What a socket's thread does with what arrives.
enum Deliver {
    Relay(mpsc::UnboundedSender<Vec<Bytes>>),
    /// Sends each message straight back (the heartbeat).
    Echo,
    /// Nothing arrives (a PUB socket).
    Nothing,
}

/// The sockets of one kernel and the libzmq context they share. [`Sockets::close`] closes them
/// all, so that a kernel that exits frees its ports and drops its connections at once.
pub struct Sockets(Mutex<Option<Open>>);

struct Open {
    context: zmq::Context,
    outboxes: Vec<Outbox>,
}

impl Sockets {
    pub const fn new() -> Sockets {
        Sockets(Mutex::new(None))
    }

    /// A ROUTER (shell, control, stdin).
    pub async fn router(&self, endpoint: &str) -> Result<Bound> {
        let (tx, incoming) = mpsc::unbounded_channel();
        let outgoing = self.open(zmq::ROUTER, endpoint, Deliver::Relay(tx)).await?;
        Ok(Bound { incoming, outgoing })
    }

    /// A PUB socket (iopub).
    pub async fn publisher(&self, endpoint: &str) -> Result<Outbox> {
        self.open(zmq::PUB, endpoint, Deliver::Nothing).await
    }

    /// A REP socket that answers every message with itself (the heartbeat).
    pub async fn echo(&self, endpoint: &str) -> Result<()> {
        self.open(zmq::REP, endpoint, Deliver::Echo).await?;
        Ok(())
    }

    async fn open(
        &self,
        kind: zmq::SocketType,
        endpoint: &str,
        deliver: Deliver,
    ) -> Result<Outbox> {
        let context = {
            let mut open = self.0.lock().unwrap();
            let open = open.get_or_insert_with(|| Open {
                context: zmq::Context::new(),
                outboxes: Vec::new(),
            });
            open.context.clone()
        };
        let socket = context.socket(kind)?;
        socket.set_maxmsgsize(MAX_MESSAGE_SIZE)?;
        // Exiting must not wait for messages no one is reading any more.
        socket.set_linger(0)?;
        let deadline = Instant::now() + BIND_RETRY;
        loop {
            match socket.bind(endpoint) {
                Ok(()) => break,
                Err(zmq::Error::EADDRINUSE) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e).with_context(|| format!("binding {endpoint}")),
            }
        }
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let (queue, commands) = std_mpsc::channel();
        let outbox = Outbox {
            queue,
            wake: Arc::new(wake),
        };
        std::thread::Builder::new()
            .name(format!("zmq {endpoint}"))
            .spawn(move || serve(socket, woken, commands, deliver))?;
        if let Some(open) = self.0.lock().unwrap().as_mut() {
            open.outboxes.push(outbox.clone());
        }
        Ok(outbox)
    }

    /// Closes every socket and ends the libzmq context, which returns once libzmq has closed
    /// each listener and connection. Gives up after `within` and says whether it finished: a
    /// thread that does not answer must not keep a kernel from exiting.
    pub fn close(&self, within: Duration) -> bool {
        let Some(open) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return true;
        };
        let deadline = Instant::now() + within;
        let closed: Vec<_> = open
            .outboxes
            .iter()
            .map(|outbox| {
                let (tx, rx) = std_mpsc::channel();
                outbox.command(Command::Close(tx));
                rx
            })
            .collect();
        for rx in closed {
            if rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                return false;
            }
        }
        // The sockets' own handles on the context went with them: dropping this last one
        // terminates it (zmq_ctx_term), which waits for libzmq's threads; on a thread of its own
        // so that the deadline holds.
        let (done_tx, done) = std_mpsc::channel();
        let context = open.context;
        std::thread::spawn(move || {
            drop(context);
            let _ = done_tx.send(());
        });
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// A socket's thread: waits for what arrives and for what is queued, until closed.
fn serve(
    socket: zmq::Socket,
    mut woken: UnixStream,
    commands: std_mpsc::Receiver<Command>,
    deliver: Deliver,
) {
    let events = match deliver {
        Deliver::Nothing => zmq::PollEvents::empty(),
        Deliver::Relay(_) | Deliver::Echo => zmq::POLLIN,
    };
    loop {
        let mut items = [
            socket.as_poll_item(events),
            zmq::PollItem::from_fd(woken.as_raw_fd(), zmq::POLLIN),
        ];
        match zmq::poll(&mut items, -1) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => {
                eprintln!("microscope kernel: a socket stopped: {e}");
                return;
            }
        }
        let (readable, wake) = (items[0].is_readable(), items[1].is_readable());
        if wake {
            let mut drained = [0u8; 64];
            let mut orphaned = false;
            loop {
                match woken.read(&mut drained) {
                    Ok(0) => {
                        orphaned = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            for command in commands.try_iter() {
                match command {
                    // ROUTER and PUB drop what they cannot deliver rather than wait; with
                    // DONTWAIT no socket can hold the thread here.
                    Command::Send(frames) => {
                        let _ = socket.send_multipart(frames.iter().map(|f| &f[..]), zmq::DONTWAIT);
                    }
                    Command::Close(done) => {
                        drop(socket);
                        let _ = done.send(());
                        return;
                    }
                }
            }
            // Every Outbox is gone: nothing can be sent or closed any more, and the pipe would
            // wake the thread for ever.
            if orphaned {
                return;
            }
        }
        if readable {
            // Everything waiting, since poll reports new arrivals, not what is still queued.
            while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                match &deliver {
                    Deliver::Relay(tx) => {
                        let _ = tx.send(frames.into_iter().map(Bytes::from).collect());
                    }
                    Deliver::Echo => {
                        let _ = socket.send_multipart(frames, zmq::DONTWAIT);
                    }
                    Deliver::Nothing => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The ZMTP 3.0 greeting (rfc.zeromq.org/spec/23) of a client with the NULL mechanism.
    fn greeting() -> Vec<u8> {
        let mut g = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
        let mut mechanism = b"NULL".to_vec();
        mechanism.resize(20, 0);
        g.extend(mechanism);
        g.push(0); // as-server: no
        g.extend([0; 31]);
        g
    }

    /// The NULL mechanism's READY command, saying this peer is a DEALER.
    fn ready() -> Vec<u8> {
        let mut body = b"\x05READY\x0bSocket-Type".to_vec();
        body.extend(6u32.to_be_bytes());
        body.extend(b"DEALER");
        let mut command = vec![0x04, body.len() as u8]; // command, short size
        command.extend(body);
        command
    }

    /// The header of a frame of `size` bytes: flags (long size, plus `flags`), then the size as
    /// 8 big-endian bytes.
    fn long_header(flags: u8, size: u64) -> Vec<u8> {
        let mut header = vec![0x02 | flags];
        header.extend(size.to_be_bytes());
        header
    }

    /// Sends `bytes` on a raw connection and says whether the kernel's side closed it.
    fn dropped_after(port: u16, bytes: &[u8]) -> bool {
        let mut peer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        peer.write_all(bytes).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut seen = Vec::new();
        match peer.read_to_end(&mut seen) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    fn dealer(context: &zmq::Context, port: u16) -> zmq::Socket {
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.set_rcvtimeo(5000).unwrap();
        dealer.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
        dealer
    }

    #[tokio::test]
    async fn a_peer_announcing_a_huge_frame_is_dropped_and_the_socket_serves_on() {
        let port = free_port();
        let sockets = Sockets::new();
        let mut shell = sockets
            .router(&format!("tcp://127.0.0.1:{port}"))
            .await
            .unwrap();
        // 32 TiB as the handshake's first command and as a message after it, and just over the
        // limit: a size the allocator would grant, so libzmq would wait for its bytes without it.
        let huge = 1 << 45;
        let over = MAX_MESSAGE_SIZE as u64 + 1;
        for attack in [
            [greeting(), long_header(0x04, huge)].concat(),
            [greeting(), ready(), long_header(0, huge)].concat(),
            [greeting(), ready(), long_header(0, over)].concat(),
        ] {
            assert!(
                dropped_after(port, &attack),
                "libzmq closes a connection that announces a frame over the limit"
            );
        }

        let context = zmq::Context::new();
        let client = dealer(&context, port);
        client.send_multipart(["hello"], 0).unwrap();
        let frames = tokio::time::timeout(Duration::from_secs(5), shell.incoming.recv())
            .await
            .expect("a message from a proper client arrives")
            .unwrap();
        assert_eq!(frames.len(), 2, "identity, then the message");
        assert_eq!(&frames[1][..], b"hello");
        shell
            .outgoing
            .send(vec![frames[0].clone(), Bytes::from_static(b"back")]);
        assert_eq!(client.recv_multipart(0).unwrap(), vec![b"back".to_vec()]);
        assert!(sockets.close(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn closed_sockets_free_their_ports_at_once() {
        let port = free_port();
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let first = Sockets::new();
        first.echo(&endpoint).await.unwrap();
        let context = zmq::Context::new();
        let client = dealer(&context, port);
        client.send_multipart([&b""[..], b"ping"], 0).unwrap();
        assert_eq!(
            client.recv_multipart(0).unwrap(),
            vec![b"".to_vec(), b"ping".to_vec()],
            "the heartbeat echoes"
        );
        let start = Instant::now();
        assert!(
            first.close(Duration::from_secs(5)),
            "closing with a client connected"
        );
        let next = Sockets::new();
        next.echo(&endpoint).await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the next kernel binds the same port without waiting ({:?})",
            start.elapsed()
        );
        assert!(next.close(Duration::from_secs(5)));
    }
}
