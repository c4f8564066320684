//! The controller daemon: owns the model state (its pure transitions in `model`,
//! `lifecycle` and `transitions`), runs one worker per unit that fires hooks in Juju's order (one at a time
//! per machine, `worker`), commits or discards each hook's buffered changes (`runner`),
//! provisions machines (`machines`) and runs the deployer and update-status loops (`loops`).
//! The socket is served by `server.rs`, the hook tools are `tools/`, the `juju` commands
//! `cli/`.

mod charm_change;
mod context;
mod deploy;
mod hook_env;
mod lifecycle;
mod loops;
mod machines;
mod model;
mod names;
mod runner;
mod runtime;
mod transitions;
mod worker;

pub use charm_change::*;
pub use context::*;
pub use machines::*;
pub use model::*;
pub use names::*;
pub use runtime::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }

    /// A model with principal `etcd` (two units, started) and subordinate `nrpe`, related
    /// through a container-scoped relation (id 0).
    fn subordinate_model() -> Model {
        let mut m = Model::new("m", "0123456789".into(), 1, Default::default());
        m.next_relation = 1;
        let ep = "nrpe-external-master".to_string();
        let principal = CharmMeta {
            name: "etcd".into(),
            provides: [(ep.clone(), "nrpe-external-master".into())].into(),
            container_endpoints: [ep.clone()].into(),
            ..Default::default()
        };
        let sub = CharmMeta {
            name: "nrpe".into(),
            requires: [(ep.clone(), "nrpe-external-master".into())].into(),
            container_endpoints: [ep.clone()].into(),
            subordinate: true,
            ..Default::default()
        };
        m.apps
            .insert("etcd".into(), App::for_test("etcd", principal));
        m.apps.insert("nrpe".into(), App::for_test("nrpe", sub));
        for _ in 0..2 {
            let (u, _) = m.add_unit("etcd", None).unwrap();
            m.units.get_mut(&u).unwrap().started = true;
        }
        let endpoint = |app: &str| Endpoint {
            app: app.into(),
            name: ep.clone(),
            interface: "nrpe-external-master".into(),
        };
        m.relations.insert(
            0,
            Relation {
                id: 0,
                endpoints: vec![endpoint("etcd"), endpoint("nrpe")],
                peer: false,
                app_data: Default::default(),
                unit_data: Default::default(),
                scope: Default::default(),
                dying: false,
                container: true,
            },
        );
        m
    }

    #[test]
    fn each_principal_unit_gets_its_own_subordinate_seeing_only_its_machine() {
        let mut m = subordinate_model();
        assert!(
            m.add_unit("nrpe", None).is_err(),
            "a subordinate has no units of its own"
        );
        m.enter_relation_scope(0, "etcd/0", "10.0.0.10");
        m.enter_relation_scope(0, "etcd/1", "10.0.0.11");
        let sub0 = &m.units["nrpe/0"];
        assert_eq!(sub0.principal.as_deref(), Some("etcd/0"));
        assert_eq!(sub0.machine, m.units["etcd/0"].machine);
        assert_eq!(m.units["nrpe/1"].principal.as_deref(), Some("etcd/1"));
        assert_eq!(m.machines.len(), 2, "no machine of their own");
        // Entering scope again adds no second subordinate.
        m.enter_relation_scope(0, "etcd/0", "10.0.0.10");
        assert_eq!(m.units.len(), 4);
        // The subordinate's scope is its machine.
        m.enter_relation_scope(0, "nrpe/0", "10.0.0.10");
        m.enter_relation_scope(0, "nrpe/1", "10.0.0.11");
        assert_eq!(m.remote_units_in_scope(0, "nrpe/0"), ["etcd/0"]);
        assert_eq!(m.remote_units_in_scope(0, "etcd/1"), ["nrpe/1"]);
        let heard_of_nrpe0 = |u: &str| {
            m.units[u]
                .queue
                .iter()
                .any(|e| e.remote_unit.as_deref() == Some("nrpe/0"))
        };
        assert!(heard_of_nrpe0("etcd/0"));
        assert!(!heard_of_nrpe0("etcd/1"), "another machine's subordinate");
    }

    #[test]
    fn subordinates_go_with_their_principal_and_with_the_relation() {
        let mut m = subordinate_model();
        m.enter_relation_scope(0, "etcd/0", "10.0.0.10");
        m.enter_relation_scope(0, "etcd/1", "10.0.0.11");
        m.remove_unit("etcd/0");
        assert_eq!(m.units["nrpe/0"].life, Life::Dying);
        assert_eq!(m.units["nrpe/1"].life, Life::Alive);
        m.remove_relation(0);
        assert_eq!(m.units["nrpe/1"].life, Life::Dying);
        assert_eq!(m.units["etcd/1"].life, Life::Alive, "the principal stays");
    }

    #[test]
    fn a_panic_under_a_lock_does_not_stop_later_commands() {
        let m = Arc::new(Mutex::new(1));
        let held = m.clone();
        let r = std::thread::spawn(move || {
            let _g = lock(&held);
            panic!("a command failed while holding the lock");
        })
        .join();
        assert!(r.is_err() && m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
