//! The controller's model state: what Juju would keep in its database. Plain data with
//! serde, persisted atomically (write to a temporary file, fsync, rename) after every change
//! so a restarted controller comes back with every model. Knows no charm.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

pub type Bag = BTreeMap<String, String>;

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct World {
    pub models: BTreeMap<String, Model>,
    #[serde(default)]
    pub current_model: Option<String>,
    #[serde(default)]
    pub next_context: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Status {
    pub current: String,
    #[serde(default)]
    pub message: String,
    pub since: String,
}

impl Status {
    pub fn new(current: &str, message: &str) -> Status {
        Status {
            current: current.into(),
            message: message.into(),
            since: now_juju(),
        }
    }
}

/// Juju's human-readable "since" form.
pub fn now_juju() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[day] [month repr:short] [year] [hour]:[minute]:[second]Z"
    );
    now.format(fmt).unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Model {
    pub name: String,
    pub uuid: String,
    pub net_index: u8,
    pub config: BTreeMap<String, Value>,
    pub apps: BTreeMap<String, App>,
    pub units: BTreeMap<String, Unit>,
    pub machines: BTreeMap<u32, Machine>,
    pub relations: BTreeMap<u32, Relation>,
    pub tasks: BTreeMap<u64, Task>,
    pub secrets: BTreeMap<String, Secret>,
    pub next_machine: u32,
    pub next_relation: u32,
    pub next_task: u64,
    #[serde(default)]
    pub next_storage: BTreeMap<String, u32>,
    /// Storage instances not in the default pool (rootfs), by id (`data/0`).
    #[serde(default)]
    pub volumes: BTreeMap<String, Volume>,
}

impl Model {
    /// An empty model.
    pub fn new(name: &str, uuid: String, net_index: u8, config: BTreeMap<String, Value>) -> Model {
        Model {
            name: name.to_string(),
            uuid,
            net_index,
            config,
            apps: Default::default(),
            units: Default::default(),
            machines: Default::default(),
            relations: Default::default(),
            tasks: Default::default(),
            secrets: Default::default(),
            next_machine: 0,
            next_relation: 0,
            next_task: 0,
            next_storage: Default::default(),
            volumes: Default::default(),
        }
    }
}

impl App {
    /// An application of `meta` deployed from nowhere, with no units: for model-level tests.
    #[cfg(test)]
    pub fn for_test(name: &str, meta: CharmMeta) -> App {
        App {
            name: name.into(),
            charm_dir: String::new(),
            charm_rev: 1,
            meta,
            config: Default::default(),
            next_unit: 0,
            leader: None,
            status: None,
            version: String::new(),
            leader_settings: Default::default(),
            resources: Default::default(),
            storage_requests: Default::default(),
            storage_volumes: Default::default(),
            base: String::new(),
            store_name: None,
            exposed: false,
            channel: None,
            dying: false,
            constraints: String::new(),
            bindings: Default::default(),
            trust: false,
        }
    }
}

/// Where a storage instance lives: its pool (`loop`, `rootfs`) and size. A `loop` volume
/// is a sparse file of that size formatted ext4 and mounted at the storage's location.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Volume {
    pub pool: String,
    pub size_mib: u64,
    /// `remove-storage` asked: it goes once its storage-detaching hook succeeds.
    #[serde(default)]
    pub removing: bool,
    /// A `block` store's loop device while attached (`loop3`): what `storage-get
    /// location` names, as Juju's loop provider does (its `DeviceName`, no stable link:
    /// it may change from one boot to the next).
    #[serde(default)]
    pub device: Option<String>,
}

/// Juju's size for a volume when none is given.
pub const DEFAULT_SIZE_MIB: u64 = 1024;

impl Volume {
    /// A `loop` volume of `size_mib` (Juju's default pool for block storage on a machine).
    pub fn loop_of(size_mib: u64) -> Volume {
        Volume {
            pool: "loop".into(),
            size_mib,
            removing: false,
            device: None,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct CharmMeta {
    pub name: String,
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    #[serde(default)]
    pub provides: BTreeMap<String, String>,
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
    /// option name → (type, default, description)
    #[serde(default)]
    pub options: BTreeMap<String, OptionDef>,
    /// action name → params schema (JSON schema "properties" with defaults)
    #[serde(default)]
    pub actions: BTreeMap<String, Value>,
    /// resource name → filename
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// storage name → (type, location, minimum count)
    #[serde(default)]
    pub storage: BTreeMap<String, StorageDef>,
    /// `subordinate: true`: its units live beside a principal's, one per principal unit
    /// in a container-scoped relation, and never get a machine of their own.
    #[serde(default)]
    pub subordinate: bool,
    /// The endpoints declared `scope: container`.
    #[serde(default)]
    pub container_endpoints: BTreeSet<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct OptionDef {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct StorageDef {
    pub kind: String,
    pub location: Option<String>,
    pub min: u32,
    /// The most instances a unit may have (`multiple: range: 0-1`); `None`: no bound.
    #[serde(default)]
    pub max: Option<u32>,
    /// `shared: true` (one instance for the application)
    #[serde(default)]
    pub shared: bool,
    /// `read-only: true`
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct App {
    pub name: String,
    pub charm_dir: String,
    pub charm_rev: u32,
    pub meta: CharmMeta,
    pub config: BTreeMap<String, Value>,
    pub next_unit: u32,
    pub leader: Option<String>,
    pub status: Option<Status>,
    pub version: String,
    pub leader_settings: Bag,
    /// resource name → (revision, host path)
    pub resources: BTreeMap<String, Resource>,
    pub storage_requests: BTreeMap<String, u32>,
    /// `--storage name=pool,size` at deploy: the volume each new unit's instances get.
    #[serde(default)]
    pub storage_volumes: BTreeMap<String, Volume>,
    /// The base deploy chose (`ubuntu@22.04`); the machines run the host's Debian whatever
    /// it is (see `bases`).
    #[serde(default)]
    pub base: String,
    /// The name the charm was found by in the store (`refresh` without `--path` looks it
    /// up again); `None` for a local charm.
    #[serde(default)]
    pub store_name: Option<String>,
    /// The channel a store charm tracks (`--channel` of deploy or refresh; Juju's default
    /// is `stable`).
    #[serde(default)]
    pub channel: Option<String>,
    /// `juju expose`: its units' opened ports are reachable from outside the model.
    #[serde(default)]
    pub exposed: bool,
    /// `remove-application` ran: the application goes when its last unit has gone (its
    /// status is the charm's to set until then, so it cannot be the mark).
    #[serde(default)]
    pub dying: bool,
    /// `--constraints` of deploy or `set-constraints`, in Juju's canonical form.
    #[serde(default)]
    pub constraints: String,
    /// `--bind`: endpoint → space, the application's default under "".
    #[serde(default)]
    pub bindings: BTreeMap<String, String>,
    /// `--trust` of deploy or refresh, `juju trust`: the application-config `trust`.
    #[serde(default)]
    pub trust: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Resource {
    pub revision: u32,
    pub path: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Life {
    Alive,
    Dying,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Unit {
    pub name: String,
    pub app: String,
    pub machine: u32,
    pub life: Life,
    pub workload: Status,
    pub agent: Status,
    pub ports: BTreeSet<String>,
    pub queue: VecDeque<Event>,
    /// the hook running now (out of the queue while it runs)
    #[serde(default)]
    pub running: Option<Event>,
    pub actions: VecDeque<u64>,
    /// The hook that failed, while the unit is in error.
    pub error: Option<HookError>,
    pub installed: bool,
    /// The charm directory (the controller's copy) this unit's files came from; another
    /// than its application's after a refresh, until its worker deployed the new one.
    #[serde(default)]
    pub charm_from: Option<String>,
    pub started: bool,
    /// relation id → remote units whose -joined hook has run here (what relation-list shows).
    pub views: BTreeMap<u32, BTreeSet<String>>,
    pub storage: Vec<String>,
    pub state: Bag,
    /// secret id → revision this unit tracks
    pub tracked: BTreeMap<String, u32>,
    pub workload_set: bool,
    /// A subordinate unit's principal (the unit whose machine it shares).
    #[serde(default)]
    pub principal: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct HookError {
    pub hook: String,
    pub retry_at: Option<u64>,
    pub attempts: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub hook: String,
    #[serde(default)]
    pub relation: Option<u32>,
    #[serde(default)]
    pub remote_unit: Option<String>,
    #[serde(default)]
    pub remote_app: Option<String>,
    #[serde(default)]
    pub departing: Option<String>,
    #[serde(default)]
    pub storage: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_revision: Option<u32>,
}

impl Event {
    pub fn hook(name: &str) -> Event {
        Event {
            hook: name.into(),
            ..Default::default()
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Machine {
    pub id: u32,
    pub address: String,
    pub hostname: String,
    /// host PID of the `unshare` parent
    pub spawn_pid: Option<u32>,
    /// host PID of the machine's PID 1
    pub init_pid: Option<u32>,
    pub status: String,
    pub cut: bool,
    pub unit: Option<String>,
    /// What the machine boots, fixed when it is created.
    #[serde(default)]
    pub kind: Kind,
    /// The first boot's provisioning (apt sources) is done.
    #[serde(default)]
    pub provisioned: bool,
    /// A second interface, eth1 (model config `harness-second-interface`, fixed when the
    /// machine is created).
    #[serde(default)]
    pub second_nic: bool,
    /// Made by `add-machine`: kept when its last unit goes.
    #[serde(default)]
    pub kept: bool,
    /// The constraints it was made with (its application's, or `add-machine`'s), in
    /// Juju's canonical form.
    #[serde(default)]
    pub constraints: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Endpoint {
    pub app: String,
    pub name: String,
    pub interface: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Relation {
    pub id: u32,
    pub endpoints: Vec<Endpoint>,
    pub peer: bool,
    pub app_data: BTreeMap<String, Bag>,
    pub unit_data: BTreeMap<String, Bag>,
    /// units that have entered scope
    pub scope: BTreeSet<String>,
    pub dying: bool,
    /// Container-scoped (either endpoint says `scope: container`): a unit sees only the
    /// remote units on its own machine.
    #[serde(default)]
    pub container: bool,
}

impl Relation {
    /// This relation's endpoint for `app`.
    pub fn endpoint_of(&self, app: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.app == app)
    }
    /// The application on the other side (the same one for a peer relation).
    pub fn remote_app_of(&self, app: &str) -> Option<&str> {
        if self.peer {
            return Some(&self.endpoints[0].app);
        }
        self.endpoints
            .iter()
            .find(|e| e.app != app)
            .map(|e| e.app.as_str())
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Task {
    pub id: u64,
    pub unit: String,
    pub action: String,
    pub params: Value,
    pub status: String,
    pub message: String,
    pub results: BTreeMap<String, Value>,
    pub log: Vec<String>,
    pub enqueued: String,
    pub started: String,
    pub completed: String,
    pub return_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// `exec` tasks carry a command instead of an action
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Secret {
    pub id: String,
    pub owner: String,
    pub label: Option<String>,
    pub description: Option<String>,
    pub expire: Option<String>,
    pub rotate: Option<String>,
    pub revisions: BTreeMap<u32, Bag>,
    pub grants: BTreeMap<u32, BTreeSet<String>>,
    /// consumer unit → its label for this secret
    #[serde(default)]
    pub consumer_labels: BTreeMap<String, String>,
    /// applications a user secret (owned by the model) is granted to (`juju grant-secret`)
    #[serde(default)]
    pub app_grants: BTreeSet<String>,
}

impl Secret {
    pub fn latest(&self) -> u32 {
        self.revisions.keys().last().copied().unwrap_or(0)
    }
}

impl World {
    pub fn load(path: &Path) -> Result<World> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("reading controller state {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(World::default()),
            Err(e) => {
                Err(e).with_context(|| format!("reading controller state {}", path.display()))
            }
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        // It holds secrets' contents: readable by root only, from the first byte.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(self)?)?;
        // Atomic against a crash of the controller (write, then rename over the old file).
        // Not fsynced: this state outlives controller restarts, not host power loss, and an
        // fsync per change would dominate the cost of a hook.
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// What a machine boots (model config `harness-machine`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The machine agent is PID 1: fastest, no init system.
    #[default]
    Namespace,
    /// systemd is PID 1 and the machine agent one of its services, as on a cloud image.
    Systemd,
    /// A systemd machine that installs snapd (and the seed snaps) at its first boot.
    Snapd,
}

impl Kind {
    pub const NAMES: &'static str = "namespace, systemd or snapd";

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "namespace" => Some(Kind::Namespace),
            "systemd" => Some(Kind::Systemd),
            "snapd" => Some(Kind::Snapd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Systemd => "systemd",
            Kind::Snapd => "snapd",
        }
    }

    /// systemd is PID 1.
    pub fn boots_systemd(self) -> bool {
        self != Kind::Namespace
    }
}
