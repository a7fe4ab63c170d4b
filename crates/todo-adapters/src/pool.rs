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
//! - A connection waits about [`IDLE_LIFETIME`] (at most twice that, by the sweeper's tick),
//!   and at most [`MAX_IDLE`] wait per
//!   instance. Spin's pool holds 64 connections per URL for the whole app, and an app runs as
//!   many instances as its load needs: an instance that keeps connections while it serves
//!   nothing takes them from instances that do, whose `Connection::open` then waits (Spin's
//!   pool has no wait timeout) until the quiet instance retires. A sweeper task, running only
//!   while something is idle, gives expired ones back.
//! - When Spin retires the instance (after its last request, or idle for a second), the store
//!   and with it every idle connection are dropped and go back to Spin's pool.

use spin_sdk::pg::Connection;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// Idle connections one instance keeps.
pub const MAX_IDLE: usize = 8;
/// How long a connection may wait for the instance's next request. Back-to-back requests
/// reuse it; an instance that falls quiet hands it back to Spin's pool soon after.
pub const IDLE_LIFETIME: Duration = Duration::from_millis(100);

struct Idle {
    url: String,
    connection: Connection,
    since: Instant,
}

thread_local! {
    /// This instance's idle connections, most recently used last. A component instance runs
    /// on one thread, so this is per instance.
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
    /// Whether a sweeper task is running on this instance.
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

/// An idle connection to `url`, if the instance has one. One the sweeper has not reached yet
/// is as good as a younger one: the lifetime bounds how long a quiet instance holds it.
pub fn take(url: &str) -> Option<Connection> {
    IDLE.with_borrow_mut(|idle| {
        let at = idle.iter().rposition(|i| i.url == url)?;
        Some(idle.remove(at).connection)
    })
}

/// Keeps `connection` for a later request, unless enough are idle already.
pub fn give_back(url: String, connection: Connection) {
    let kept = IDLE.with_borrow_mut(|idle| {
        if idle.len() >= MAX_IDLE {
            return false;
        }
        idle.push(Idle {
            url,
            connection,
            since: Instant::now(),
        });
        true
    });
    if kept && !SWEEPING.replace(true) {
        spin_sdk::wit_bindgen::spawn(sweep());
    }
}

/// Drops expired idle connections until none is left idle, then ends.
async fn sweep() {
    let tick = u64::try_from(IDLE_LIFETIME.as_nanos()).unwrap_or(u64::MAX);
    loop {
        spin_sdk::wasip3::clocks::monotonic_clock::wait_for(tick).await;
        if expire(Instant::now()) == 0 {
            SWEEPING.set(false);
            return;
        }
    }
}

/// Drops connections idle for longer than [`IDLE_LIFETIME`] at `now`, and returns how many
/// stay idle.
fn expire(now: Instant) -> usize {
    IDLE.with_borrow_mut(|idle| {
        idle.retain(|i| now.duration_since(i.since) <= IDLE_LIFETIME);
        idle.len()
    })
}

/// How many connections are idle (for tests and diagnostics).
pub fn idle_count() -> usize {
    IDLE.with_borrow(Vec::len)
}
