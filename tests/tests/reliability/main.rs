//! Reliability: the app through the test host under load, with PostgreSQL and the Dapr
//! sidecar failing underneath it, and fed thousands of malformed requests. Each check prints
//! what it tried; when all have held, one summary line follows.
//!
//! Run through `scripts/test.sh` (it exports `TEST_DATABASE_URL`, `TEST_TEMPLATE_DB` and
//! `PG_BIN`). The outage check starts a PostgreSQL server of its own, which it stops and starts;
//! that is why these checks are a test binary of their own, and why they run one at a time.

mod bad_input;
mod faults;
mod load;
mod support;
