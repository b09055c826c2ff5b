//! Shared by both modules: the one bound on waits.

use std::time::Duration;

/// Upper bound for any single wait in these tests (a cluster's failover included).
pub const WAIT: Duration = Duration::from_secs(20);
