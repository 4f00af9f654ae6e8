//! The failures a test injects, as a cluster produces them: watches that end, an event
//! history compacted away (`410 Expired` on the next watch from before it), requests
//! answered 500 or never, and RBAC refusals (403) per resource or per verb.
//!
//! A fault mode or a prohibition lasts until lifted; [`FakeApiServer::clear_faults`]
//! lifts them all. Over HTTP the same hooks are under `/fake/` (see `dispatch`), for
//! demos and tests in other languages.

use super::super::faults::Mode;
use super::FakeApiServer;

impl FakeApiServer {
    /// Ends every open watch (clients see their watch stream close).
    pub fn drop_watches(&self) {
        self.shared.store.drop_watches();
    }

    /// Drops every watch and forgets the event history: a watch from any earlier
    /// resourceVersion then gets `410 Expired`. Objects are kept.
    pub fn restart_with_compaction(&self) {
        self.shared.store.compact_and_drop_watches();
    }

    /// Answer every request with 500 (`Fail`), hold them (`Hang`), or serve (`Normal`).
    pub fn set_fault_mode(&self, mode: Mode) {
        self.shared.faults.set_mode(mode);
    }

    /// Answers every request for `group`/`resource` (`""` for core) with 403 Forbidden.
    pub fn forbid(&self, group: &str, resource: &str) {
        self.shared.faults.forbid(group, resource, "*");
    }

    /// Answers one verb (`list`, `watch`, `get`, ...) on `group`/`resource` with 403.
    pub fn forbid_verb(&self, group: &str, resource: &str, verb: &str) {
        self.shared.faults.forbid(group, resource, verb);
    }

    /// Lifts every prohibition on `group`/`resource`.
    pub fn allow(&self, group: &str, resource: &str) {
        self.shared.faults.allow(group, resource);
    }

    /// Back to normal service, nothing forbidden.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }
}
