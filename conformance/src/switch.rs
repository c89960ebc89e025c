//! [`Switch`]: a TCP forwarder on 127.0.0.1 that a client is pointed at,
//! forwarding to one server and then, after [`Switch::cut`], to another:
//! what a load balancer does when a server dies or a client comes back
//! elsewhere. Plain threads and blocking sockets, so it works under any
//! runtime; every connection it carries ends when it is cut or dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct State {
    target: Option<SocketAddr>,
    /// Both sockets of every connection carried, to cut them.
    open: Vec<(TcpStream, TcpStream)>,
}

/// A switchable forwarder. See the [module docs](self).
#[derive(Debug)]
pub struct Switch {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Switch {
    /// Listens on a fresh loopback port, forwarding to `target` (`None`:
    /// connections are refused by closing them at once).
    pub fn start(target: Option<SocketAddr>) -> io::Result<Switch> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            target,
            open: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_state, accept_stop) = (state.clone(), stop.clone());
        std::thread::spawn(move || accept(listener, accept_state, accept_stop));
        Ok(Switch { addr, state, stop })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://` URL of this switch.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Ends every connection carried now (both ways, at once).
    pub fn cut(&self) {
        let open = std::mem::take(&mut self.lock().open);
        for (a, b) in open {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// New connections go to `target` from now on (`None`: closed at once).
    pub fn point_to(&self, target: Option<SocketAddr>) {
        self.lock().target = target;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn accept(listener: TcpListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        let target = state.lock().unwrap_or_else(|e| e.into_inner()).target;
        let Some(server) = target.and_then(|t| TcpStream::connect(t).ok()) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .push((c3, s3));
        std::thread::spawn(move || pipe(client, server));
        std::thread::spawn(move || pipe(s2, c2));
    }
}

/// Copies `from` into `to` until either ends, then ends both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
