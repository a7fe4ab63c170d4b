//! PostgreSQL connections kept by a component instance between its requests.
//!
//! Spin's pg host pools connections per URL, but every `Connection::open` of a pooled one first
//! resets the session (deadpool's `RecyclingMethod::Clean`: one more round trip running seven
//! utility statements). A Spin 4 instance of a WASI 0.3 component serves up to 128 requests,
//! up to 16 at a time, from one store, so a connection resource opened by one request is still
//! valid in the instance's later requests. Keeping a few idle ones here saves that reset.
//!
//! The rules that make this safe:
//! - A connection belongs to one request at a time: [`take`] moves it out of the idle list and
//!   [`give_back`] returns it when that request (or its post-response work) is done. Requests of
//!   one instance run concurrently, but never share a connection.
//! - A connection goes back only in a known state: every statement this app runs is a single
//!   statement in autocommit (no `begin` is ever left open). Code that opens a transaction must
//!   commit or roll it back before the connection is given back, or mark it broken.
//! - A connection that failed at the connection level (closed, reset, server shutting down) is
//!   marked broken and dropped, never given back; a statement error (a constraint, a type
//!   mismatch) leaves the session usable.
//! - At most [`MAX_IDLE`] wait per instance, well below Spin's per-URL pool size (64), so idle
//!   connections held by instances cannot starve other components of the same app.
//! - When Spin retires the instance (after its last request, or idle for a second), the store
//!   and with it every idle connection are dropped and go back to Spin's pool.

use spin_sdk::pg::Connection;
use std::cell::RefCell;

/// Idle connections one instance keeps.
pub const MAX_IDLE: usize = 8;

thread_local! {
    /// This instance's idle connections with their URLs, most recently used last. A component
    /// instance runs on one thread, so this is per instance.
    static IDLE: RefCell<Vec<(String, Connection)>> = const { RefCell::new(Vec::new()) };
}

/// An idle connection to `url`, if the instance has one.
pub fn take(url: &str) -> Option<Connection> {
    IDLE.with_borrow_mut(|idle| {
        let at = idle.iter().rposition(|(u, _)| u == url)?;
        Some(idle.remove(at).1)
    })
}

/// Keeps `connection` for a later request, unless enough are idle already.
pub fn give_back(url: String, connection: Connection) {
    IDLE.with_borrow_mut(|idle| {
        if idle.len() < MAX_IDLE {
            idle.push((url, connection));
        }
    });
}

/// How many connections are idle (for tests and diagnostics).
pub fn idle_count() -> usize {
    IDLE.with_borrow(Vec::len)
}
