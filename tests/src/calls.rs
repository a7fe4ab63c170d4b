//! What a component's instances asked of the host, counted for tests: database statements
//! (each a prepare and an execute through Spin's pg host) and variable reads (each an async
//! host call that suspends the guest, the kind after which Spin 4.0.2's answer can lose the
//! head-before-body race; BENCHMARKS.md, "What makes an answer lose the race"). Spin keeps no
//! such counts; the host keeps them so that a test can fail where the app would cost a round
//! trip or risk a stall on Spin.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counts of one component, over all its instances. Cheap to clone; clones share counts.
#[derive(Clone, Debug, Default)]
pub struct HostCalls {
    statements: Arc<AtomicU64>,
    variable_reads: Arc<AtomicU64>,
}

impl HostCalls {
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn variable_reads(&self) -> u64 {
        self.variable_reads.load(Ordering::Relaxed)
    }

    pub(crate) fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_variable_read(&self) {
        self.variable_reads.fetch_add(1, Ordering::Relaxed);
    }
}
