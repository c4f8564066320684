//! Pure decisions of the hook (`reconcile.rs`): each takes what the hook observed and
//! returns what to do, with no I/O, so each is tested state in, state out. The reconcile
//! observes (hook tools, etcd, local files), asks here, and applies the answer.
//!
//! Must not: call hook tools, etcd or the file system; log (the caller says what it decided).

pub use crate::ops::health::{health, majority_gone_for_good, member_status, Health};
use crate::ops::membership::plan::Join;
use crate::unit::status::Level;
use std::time::Duration;

/// How a member with no recorded start begins.
#[derive(Debug, PartialEq)]
pub enum Start {
    /// Added by the leader (`member add`): joins with the cluster the leader computed.
    Join { initial_cluster: String },
    /// In the bootstrap set: starts a new cluster with the others of the set.
    Bootstrap { initial_cluster: Option<String> },
    /// Has a member's data already (a reboot before its start was recorded, a migration):
    /// starts from it.
    FromData,
    /// Nothing to start from yet: the leader's join or bootstrap comes in a later hook.
    Wait,
}

/// `join` is the join in flight (any unit's); `bootstrap` the names of the bootstrap set.
pub fn start(
    unit: &str,
    name: &str,
    join: Option<Join>,
    bootstrap: &[String],
    bootstrap_cluster: Option<&str>,
    has_data: bool,
) -> Start {
    match join {
        Some(j) if j.unit == unit => Start::Join {
            initial_cluster: j.initial_cluster,
        },
        _ if bootstrap.iter().any(|b| b == name) => Start::Bootstrap {
            initial_cluster: bootstrap_cluster.map(String::from),
        },
        _ if has_data => Start::FromData,
        _ => Start::Wait,
    }
}

/// What a running member that must restart (a new config, new binaries, a new CA bundle)
/// sees of the roll.
pub struct TurnView<'a> {
    /// the only unit: nobody to wait for
    pub alone: bool,
    /// its storage is detaching: the data leaves now, not in a turn
    pub detaching: bool,
    /// the leader granted this unit the restart lock for exactly this change
    pub granted: bool,
    /// new binaries are staged (an upgrade, not only a config)
    pub upgrading: bool,
    /// this unit already handed this turn back once
    pub declined_before: bool,
    /// other units still wait in the roll's queue
    pub others_waiting: bool,
    /// a unit whose new version failed and was rolled back: (unit, version)
    pub rolled_back: Option<(String, String)>,
    /// the roll is paused after this unit (`pause_after_unit_upgrade`)
    pub paused_after: Option<&'a str>,
    /// a unit whose new config failed and was rolled back (the roll stops there)
    pub config_rejected: Option<&'a str>,
}

#[derive(Debug, PartialEq)]
pub enum Turn {
    /// Restart now (switching staged binaries in).
    Take,
    /// Give the granted upgrade turn back: this member leads raft and others still wait, so
    /// it goes last.
    HandBack,
    /// The roll stopped on another unit's failure; this one keeps its version.
    Stopped { unit: String, version: String },
    /// The roll stopped on a unit whose new config failed; this one keeps its config.
    ConfigStopped { unit: String },
    /// The roll waits for the operator's resume-upgrade.
    Paused { after: String },
    /// Not this unit's turn yet.
    Wait,
}

/// `leads_raft` is asked only when the answer matters (a granted upgrade turn with others
/// still waiting): it costs a request to etcd.
pub fn turn(v: &TurnView, leads_raft: impl FnOnce() -> bool) -> Turn {
    let may_hand_back = v.granted
        && !v.alone
        && !v.detaching
        && v.upgrading
        && !v.declined_before
        && v.others_waiting;
    if may_hand_back && leads_raft() {
        return Turn::HandBack;
    }
    if v.alone || v.detaching || v.granted {
        return Turn::Take;
    }
    if let Some((unit, version)) = &v.rolled_back {
        return Turn::Stopped {
            unit: unit.clone(),
            version: version.clone(),
        };
    }
    if let Some(unit) = v.config_rejected {
        return Turn::ConfigStopped { unit: unit.into() };
    }
    if let Some(after) = v.paused_after {
        return Turn::Paused {
            after: after.to_string(),
        };
    }
    Turn::Wait
}

/// What a member does about the cluster epoch the leader publishes (a restore starts a new
/// one).
#[derive(Debug, PartialEq)]
pub enum Epoch {
    /// Its data belongs to the cluster before a restore: set it aside and join the new one.
    Rejoin {
        old: String,
        new: String,
    },
    /// A member that started before epochs were recorded takes the published one.
    Adopt(String),
    Keep,
}

/// `started` is whether the member has a recorded start (its initial cluster).
pub fn epoch(published: Option<&str>, mine: Option<&str>, started: bool, leader: bool) -> Epoch {
    let Some(new) = published else {
        return Epoch::Keep;
    };
    match mine {
        // The leader restored its own member into the new epoch itself.
        Some(old) if old != new && !leader => Epoch::Rejoin {
            old: old.to_string(),
            new: new.to_string(),
        },
        None if started => Epoch::Adopt(new.to_string()),
        _ => Epoch::Keep,
    }
}

/// What the leader knows when it sets the application's status.
pub struct AppView<'a> {
    /// the leader's own unit's verdict (level, message)
    pub unit_level: Level,
    pub unit_msg: &'a str,
    pub voters: usize,
    /// units whose member has started, of all the units
    pub started: usize,
    pub units: usize,
    /// `3.5.16 (etcd/0), 3.5.30 (etcd/1)` during a roll
    pub mixed_versions: Option<String>,
    /// the scheduled snapshots' note, with the unit that takes them
    pub backups: Option<String>,
    /// why membership waits (a join or promotion in flight)
    pub membership_wait: Option<String>,
}

/// The application's status: the leader's own verdict, unless it is healthy; then healthy
/// only once every unit's member has started (else how many have and why the others wait),
/// with a roll's mixed versions and the scheduled snapshots' state.
pub fn app_status(v: &AppView) -> (Level, String) {
    if v.unit_level != Level::Active {
        return (v.unit_level, v.unit_msg.to_string());
    }
    if v.started < v.units {
        let why = v
            .membership_wait
            .as_ref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        return (
            Level::Waiting,
            format!(
                "{} of {} units are cluster members{why}",
                v.started, v.units
            ),
        );
    }
    let mixed = v
        .mixed_versions
        .as_ref()
        .map(|m| format!("; mixed etcd versions: {m}"))
        .unwrap_or_default();
    let backups = v
        .backups
        .as_ref()
        .map(|b| format!("; {b}"))
        .unwrap_or_default();
    (
        Level::Active,
        format!("Healthy with {} known peers{mixed}{backups}", v.voters),
    )
}

/// What this hook does about the member's etcd process.
#[derive(Debug, PartialEq)]
pub enum MemberAction {
    /// etcd is not running: start it with the rendered config, now (no turn: a member that
    /// is down serves no one).
    Start,
    /// Running with another config, CA bundle or binaries than it should: restart in this
    /// unit's rolling turn.
    RestartInTurn,
    /// Running as it should.
    Keep,
}

/// Why a config's `quota_backend_bytes` (0: etcd's 2 GiB default) cannot be applied to a
/// member whose database file is `db_size` bytes: etcd would raise its NOSPACE alarm as soon
/// as it starts and refuse every write. Pure.
pub fn quota_short(quota: u64, db_size: u64) -> Option<String> {
    let effective = if quota == 0 { 2 << 30 } else { quota };
    (effective < db_size).then(|| {
        format!(
            "quota_backend_bytes {quota} is below this member's database size ({db_size} bytes): \
             etcd would raise its NOSPACE alarm at once and refuse writes; set a larger quota \
             (or compact and defragment first). The current config keeps running"
        )
    })
}

/// What `member_action` decides from.
pub struct MemberView<'a> {
    pub running: bool,
    /// the rendered config differs from the one on disk
    pub config_changed: bool,
    /// the CA bundle etcd started with, and the one on disk (sha16s)
    pub trust_running: Option<&'a str>,
    pub trust_on_disk: Option<&'a str>,
    /// the same for the peer port's bundle
    pub peer_trust_running: Option<&'a str>,
    pub peer_trust_on_disk: Option<&'a str>,
    /// new binaries are staged
    pub staged: bool,
    /// the version etcd was started from, when known, and the installed one
    pub running_version: Option<&'a str>,
    pub installed_version: &'a str,
}

pub fn member_action(v: &MemberView) -> MemberAction {
    if !v.running {
        MemberAction::Start
    } else if v.config_changed
        || v.trust_running != v.trust_on_disk
        || v.peer_trust_running != v.peer_trust_on_disk
        || v.staged
        || v.running_version.is_some_and(|r| r != v.installed_version)
    {
        MemberAction::RestartInTurn
    } else {
        MemberAction::Keep
    }
}

/// How long a hook waits for its member to answer before it reports what it sees: an
/// update-status is a probe (it runs again soon); a started member gets a moment to come
/// back; a member of a bootstrap set published in this very hook cannot answer before its
/// peers start, which happens only after the hook commits, so it does not wait at all.
pub fn patience(update_status: bool, was_started: bool, bootstraps_now: bool) -> Duration {
    if update_status {
        Duration::from_secs(1)
    } else if was_started {
        Duration::from_secs(10)
    } else if bootstraps_now {
        Duration::ZERO
    } else {
        Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcdkit::client::Status;

    #[test]
    fn a_quota_below_the_database_is_not_applied() {
        assert!(quota_short(1024, 20480)
            .unwrap()
            .contains("quota_backend_bytes 1024"));
        assert_eq!(quota_short(1 << 30, 20480), None);
        assert_eq!(quota_short(0, 1 << 30), None, "0 is etcd's 2 GiB");
        assert!(quota_short(0, 3 << 30).is_some());
    }

    fn join(unit: &str) -> Join {
        Join {
            unit: unit.into(),
            name: "etcd1".into(),
            peer_url: "https://10.0.0.2:2380".into(),
            initial_cluster: "etcd0=https://10.0.0.1:2380,etcd1=https://10.0.0.2:2380".into(),
        }
    }

    #[test]
    fn a_member_starts_from_its_join_its_bootstrap_or_its_data() {
        let set = vec!["etcd0".to_string(), "etcd1".to_string()];
        // The leader's join for this unit wins over everything.
        assert_eq!(
            start(
                "etcd/1",
                "etcd1",
                Some(join("etcd/1")),
                &set,
                Some("c"),
                true
            ),
            Start::Join {
                initial_cluster: join("etcd/1").initial_cluster
            }
        );
        // Another unit's join is not this one's.
        assert_eq!(
            start(
                "etcd/2",
                "etcd2",
                Some(join("etcd/1")),
                &set,
                Some("c"),
                false
            ),
            Start::Wait
        );
        assert_eq!(
            start("etcd/0", "etcd0", None, &set, Some("c"), false),
            Start::Bootstrap {
                initial_cluster: Some("c".into())
            }
        );
        assert_eq!(
            start("etcd/5", "etcd5", None, &set, Some("c"), true),
            Start::FromData
        );
        assert_eq!(
            start("etcd/5", "etcd5", None, &[], None, false),
            Start::Wait
        );
    }

    fn view() -> TurnView<'static> {
        TurnView {
            alone: false,
            detaching: false,
            granted: false,
            upgrading: false,
            declined_before: false,
            others_waiting: true,
            rolled_back: None,
            paused_after: None,
            config_rejected: None,
        }
    }

    #[test]
    fn the_raft_leader_hands_a_granted_upgrade_turn_back_once() {
        let v = TurnView {
            granted: true,
            upgrading: true,
            ..view()
        };
        assert_eq!(turn(&v, || true), Turn::HandBack);
        assert_eq!(turn(&v, || false), Turn::Take);
        // Once handed back for this change, the turn is taken when it comes again.
        let again = TurnView {
            declined_before: true,
            ..v
        };
        assert_eq!(turn(&again, || true), Turn::Take);
        // Nobody else waiting, or a config-only restart: the raft leader takes its turn.
        let last = TurnView {
            others_waiting: false,
            granted: true,
            upgrading: true,
            ..view()
        };
        assert_eq!(turn(&last, || true), Turn::Take);
        let config_only = TurnView {
            granted: true,
            ..view()
        };
        assert_eq!(turn(&config_only, || true), Turn::Take);
    }

    #[test]
    fn raft_leadership_is_asked_only_when_it_decides() {
        let asked = std::cell::Cell::new(false);
        let ask = || {
            asked.set(true);
            true
        };
        assert_eq!(turn(&view(), ask), Turn::Wait);
        assert!(!asked.get(), "no request to etcd for a unit without a turn");
    }

    #[test]
    fn a_unit_without_a_turn_waits_stops_or_pauses() {
        assert_eq!(turn(&view(), || false), Turn::Wait);
        let stopped = TurnView {
            rolled_back: Some(("etcd/1".into(), "3.5.16".into())),
            paused_after: Some("etcd/1"),
            ..view()
        };
        // A failure stops the roll; that says more than a pause.
        assert_eq!(
            turn(&stopped, || false),
            Turn::Stopped {
                unit: "etcd/1".into(),
                version: "3.5.16".into()
            }
        );
        let rejected = TurnView {
            config_rejected: Some("etcd/0"),
            paused_after: Some("etcd/1"),
            ..view()
        };
        assert_eq!(
            turn(&rejected, || false),
            Turn::ConfigStopped {
                unit: "etcd/0".into()
            }
        );
        let paused = TurnView {
            paused_after: Some("etcd/1"),
            ..view()
        };
        assert_eq!(
            turn(&paused, || false),
            Turn::Paused {
                after: "etcd/1".into()
            }
        );
        // Alone or detaching, there is no one to wait for.
        for v in [
            TurnView {
                alone: true,
                ..view()
            },
            TurnView {
                detaching: true,
                rolled_back: Some(("etcd/1".into(), "3.5.16".into())),
                ..view()
            },
        ] {
            assert_eq!(turn(&v, || true), Turn::Take);
        }
    }

    #[test]
    fn a_members_health_from_its_own_answers() {
        let s = |leader: u64, learner: bool| Status {
            leader,
            is_learner: learner,
            ..Default::default()
        };
        assert_eq!(health(Some(&s(7, true)), true, true), Health::Learner);
        assert_eq!(health(Some(&s(7, false)), true, true), Health::Healthy);
        assert_eq!(health(Some(&s(0, false)), false, true), Health::NoLeader);
        // A member still bootstrapping has no leader yet: unhealthy, not a lost majority.
        assert_eq!(health(Some(&s(0, false)), false, false), Health::Unhealthy);
        assert_eq!(health(Some(&s(7, false)), false, true), Health::Unhealthy);
        assert_eq!(health(None, false, true), Health::Silent);
    }

    #[test]
    fn a_members_status_says_its_health_and_what_to_do() {
        let st = |h: Health, started: bool| member_status(&h, 3, started, true);
        assert_eq!(
            st(Health::Healthy, true),
            (Level::Active, "Healthy with 3 known peers".to_string())
        );
        assert_eq!(
            st(Health::Unhealthy, true),
            (Level::Blocked, "UnHealthy with 3 known peers".to_string())
        );
        assert_eq!(st(Health::Learner, true).0, Level::Waiting);
        let (level, msg) = st(Health::NoLeader, true);
        assert!(level == Level::Blocked && msg.contains("run the recover action"));
        // Silent: a member that ran before may be waiting for lost peers; a new one is not.
        assert!(st(Health::Silent, true)
            .1
            .contains("run the recover action"));
        assert_eq!(
            st(Health::Silent, false),
            (Level::Waiting, "Waiting for etcd to start".to_string())
        );
        // While the units of the members that do not answer are deployed, their machines
        // may come back: recover (which throws their members away) is not named.
        for h in [Health::NoLeader, Health::Silent] {
            let (_, msg) = member_status(&h, 3, true, false);
            assert!(!msg.contains("recover"), "{msg}");
        }
        assert!(!majority_gone_for_good(3, 3));
        assert!(!majority_gone_for_good(2, 3));
        assert!(majority_gone_for_good(1, 3));
        assert!(majority_gone_for_good(2, 5));
        assert!(!majority_gone_for_good(1, 0));
    }

    fn app() -> AppView<'static> {
        AppView {
            unit_level: Level::Active,
            unit_msg: "Healthy with 3 known peers",
            voters: 3,
            started: 3,
            units: 3,
            mixed_versions: None,
            backups: None,
            membership_wait: None,
        }
    }

    #[test]
    fn the_application_is_healthy_only_when_every_member_started() {
        assert_eq!(
            app_status(&app()),
            (Level::Active, "Healthy with 3 known peers".to_string())
        );
        let joining = AppView {
            started: 2,
            units: 3,
            membership_wait: Some("etcd/2 joins as a learner".into()),
            ..app()
        };
        assert_eq!(
            app_status(&joining),
            (
                Level::Waiting,
                "2 of 3 units are cluster members: etcd/2 joins as a learner".to_string()
            )
        );
        // The leader's own trouble is the application's.
        let blocked = AppView {
            unit_level: Level::Blocked,
            unit_msg: "UnHealthy with 3 known peers",
            started: 2,
            ..app()
        };
        assert_eq!(
            app_status(&blocked),
            (Level::Blocked, "UnHealthy with 3 known peers".to_string())
        );
    }

    #[test]
    fn the_healthy_application_says_its_roll_and_its_snapshots() {
        let v = AppView {
            mixed_versions: Some("3.5.16 (etcd/0), 3.5.30 (etcd/1, etcd/2)".into()),
            backups: Some("last scheduled snapshot 3m ago (etcd/1)".into()),
            ..app()
        };
        assert_eq!(
            app_status(&v).1,
            "Healthy with 3 known peers; mixed etcd versions: 3.5.16 (etcd/0), 3.5.30 \
             (etcd/1, etcd/2); last scheduled snapshot 3m ago (etcd/1)"
        );
    }

    #[test]
    fn a_member_of_the_old_epoch_rejoins_the_restored_cluster() {
        assert_eq!(
            epoch(Some("3"), Some("2"), true, false),
            Epoch::Rejoin {
                old: "2".into(),
                new: "3".into()
            }
        );
        // The leader made the new epoch: it runs in it already.
        assert_eq!(epoch(Some("3"), Some("2"), true, true), Epoch::Keep);
        assert_eq!(epoch(Some("3"), Some("3"), true, false), Epoch::Keep);
        // A member from before epochs were recorded takes the published one; one that has
        // not started yet takes it when it starts.
        assert_eq!(
            epoch(Some("1"), None, true, false),
            Epoch::Adopt("1".into())
        );
        assert_eq!(epoch(Some("1"), None, false, false), Epoch::Keep);
        assert_eq!(epoch(None, Some("2"), true, false), Epoch::Keep);
    }

    #[test]
    fn a_member_starts_when_down_restarts_in_turn_when_stale_and_otherwise_keeps_running() {
        let v = |running, config_changed, trust: Option<&'static str>, staged, running_version| {
            member_action(&MemberView {
                running,
                config_changed,
                trust_running: trust,
                trust_on_disk: Some("ca1"),
                peer_trust_running: Some("p"),
                peer_trust_on_disk: Some("p"),
                staged,
                running_version,
                installed_version: "3.5.16",
            })
        };
        use MemberAction::*;
        // Down: started now, whatever else changed.
        assert_eq!(v(false, true, Some("ca0"), true, Some("3.5.1")), Start);
        assert_eq!(v(true, false, Some("ca1"), false, Some("3.5.16")), Keep);
        assert_eq!(
            v(true, true, Some("ca1"), false, Some("3.5.16")),
            RestartInTurn
        );
        // A new CA bundle: etcd reads its trusted CAs only when it starts.
        assert_eq!(
            v(true, false, Some("ca0"), false, Some("3.5.16")),
            RestartInTurn
        );
        assert_eq!(
            v(true, false, Some("ca1"), true, Some("3.5.16")),
            RestartInTurn
        );
        // Binaries switched in under it (an interrupted turn finished, a package upgrade).
        assert_eq!(
            v(true, false, Some("ca1"), false, Some("3.5.1")),
            RestartInTurn
        );
        // A version never recorded (a unit from before it was) is not a reason to restart.
        assert_eq!(v(true, false, Some("ca1"), false, None), Keep);
    }

    #[test]
    fn a_hook_waits_for_its_member_as_long_as_waiting_can_help() {
        assert_eq!(patience(true, true, false), Duration::from_secs(1));
        assert_eq!(patience(true, false, true), Duration::from_secs(1));
        assert_eq!(patience(false, true, false), Duration::from_secs(10));
        assert_eq!(patience(false, false, true), Duration::ZERO);
        assert_eq!(patience(false, false, false), Duration::from_secs(30));
    }
}
