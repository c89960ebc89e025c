//! [`SocketWire`]: the vector interpreter's [`Wire`] over a real WebSocket.
//!
//! The interpreter is synchronous, so a `SocketWire` owns a small
//! current-thread tokio runtime and blocks on it; run one per thread to run
//! cases concurrently.
//!
//! ```no_run
//! use conformance::{Fixture, SocketWire};
//! use rtm_core::testkit::vectors::{parse_cases, run_case};
//!
//! let case = &parse_cases(r#"{"name":"echo","steps":[]}"#).unwrap()[0];
//! let fixture = Fixture::start("target/debug/rtm-fixture", case.fixture_flags()).unwrap();
//! let mut wire = SocketWire::connect(fixture.url()).unwrap();
//! run_case(case, &mut wire).unwrap();
//! ```

use std::time::Duration;

use rtm_core::testkit::vectors::{Received, Wire};

use crate::conn::{RawConn, ABNORMAL_CLOSE, QUIET, REPLY_TIMEOUT};

/// One client connection that the vector interpreter drives.
///
/// `next_frame_or_close` waits up to [`REPLY_TIMEOUT`], `next_if_any` up to
/// [`QUIET`], and `advance(ms)` really sleeps `ms`.
pub struct SocketWire {
    runtime: tokio::runtime::Runtime,
    conn: RawConn,
    send_failed: bool,
}

impl std::fmt::Debug for SocketWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketWire")
            .field("send_failed", &self.send_failed)
            .finish_non_exhaustive()
    }
}

impl SocketWire {
    /// Connects to `url` (`ws://…`).
    pub fn connect(url: &str) -> Result<SocketWire, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
        let conn = runtime.block_on(RawConn::connect(url))?;
        Ok(SocketWire {
            runtime,
            conn,
            send_failed: false,
        })
    }

    fn read(&mut self, wait: Duration) -> Received {
        match self.runtime.block_on(self.conn.recv(wait)) {
            // A failed send with nothing left to read is a broken connection.
            Received::Nothing if self.send_failed => Received::Close(ABNORMAL_CLOSE),
            got => got,
        }
    }
}

impl Wire for SocketWire {
    fn send_text(&mut self, text: &str) {
        // The interpreter's send cannot fail; a broken socket shows up on the next read.
        if self.runtime.block_on(self.conn.send_text(text)).is_err() {
            self.send_failed = true;
        }
    }

    fn send_binary(&mut self, bytes: &[u8]) {
        if self.runtime.block_on(self.conn.send_binary(bytes)).is_err() {
            self.send_failed = true;
        }
    }

    fn next_frame_or_close(&mut self) -> Received {
        self.read(REPLY_TIMEOUT)
    }

    fn next_if_any(&mut self) -> Received {
        self.read(QUIET)
    }

    fn advance(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
