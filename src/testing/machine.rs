//! A machine for whole-hook tests: a mount and a network namespace held by a small agent
//! process (`unshare`), where `/run`, `/var/lib`, `/var/log` and `/opt` are empty tmpfs and
//! `/etc` is the host's under a tmpfs overlay, so the charm's files are real files that no
//! other test or the host sees, and its etcd (started by the hook through the built-in
//! supervisor: there is no systemd here) listens on the machine's own address. Each hook is
//! a process of its own, as Juju runs them: this test binary again, entered into the
//! machine's namespaces, running one hook against the in-memory Juju (`super::juju`) with
//! the world read from and written back to a file. Dropping the machine kills every process
//! in it (by PID), so nothing outlives the test.

use super::juju::{FakeJuju, World};
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's address (on its loopback device, in its own network namespace).
pub const ADDRESS: &str = "10.77.0.1";

pub struct Machine {
    agent: Child,
    pub scratch: tempfile::TempDir,
}

/// How a hook ended.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Ran {
    pub ok: bool,
    pub error: String,
}

const SETUP: &str = "set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /var/log
mount -t tmpfs tmpfs /opt
mkdir -p /run/.etc/up /run/.etc/work
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/.etc/up,workdir=/run/.etc/work /etc
ip link set lo up
ip addr add 10.77.0.1/8 dev lo
echo ready
exec sleep 100000";

impl Machine {
    pub fn new() -> Machine {
        let scratch = tempfile::tempdir().unwrap();
        let mut agent = Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                SETUP,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare (util-linux) runs: whole-hook tests need root");
        let mut line = String::new();
        std::io::BufReader::new(agent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the machine's namespaces could not be set up"
        );
        Machine { agent, scratch }
    }

    fn ns(&self, kind: &str) -> std::fs::File {
        std::fs::File::open(format!("/proc/{}/ns/{kind}", self.agent.id())).unwrap()
    }

    /// Runs one hook (`hooks/<name>`) or action (`actions/<name>`) against `world`, which
    /// then holds what Juju holds after it.
    pub fn run(&self, world: &mut World, dispatch: &str) -> Ran {
        let wf = self.scratch.path().join("world.json");
        let rf = self.scratch.path().join("ran.json");
        // The last hook's result, if any: a missing one is what this run expects.
        let _ = std::fs::remove_file(&rf);
        std::fs::write(&wf, serde_json::to_vec(world).unwrap()).unwrap();
        let (net, mnt) = (self.ns("net"), self.ns("mnt"));
        let (netfd, mntfd) = (net.as_raw_fd(), mnt.as_raw_fd());
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "testing::machine::hook_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOOK_CHILD_DIR", self.scratch.path())
        .env("JUJU_DISPATCH_PATH", dispatch)
        .env("JUJU_UNIT_NAME", &world.unit)
        .env("JUJU_MODEL_NAME", "hooks")
        .stdin(Stdio::null());
        if let Some(h) = dispatch.strip_prefix("hooks/") {
            cmd.env("JUJU_HOOK_NAME", h);
        }
        // setns is all a forked child does before exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netfd, libc::CLONE_NEWNET) != 0
                    || libc::setns(mntfd, libc::CLONE_NEWNS) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let ran: Ran = match std::fs::read(&rf) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => panic!(
                "the hook process wrote no result: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        *world = serde_json::from_slice(&std::fs::read(&wf).unwrap()).unwrap();
        ran
    }

    /// Runs `script` with `sh -c` inside the machine; its stdout, or a panic with its stderr.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.agent.id().to_string(),
                "-m",
                "-n",
                "--",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The processes in the machine (its network namespace), the agent included.
    fn processes(&self) -> Vec<i32> {
        let mine = std::fs::read_link(format!("/proc/{}/ns/net", self.agent.id())).ok();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == mine)
            .collect()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.processes();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // A process that exited since it was listed is gone already.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            // Reaps the agent once it died; its status does not matter.
            let _ = self.agent.try_wait();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reaped above or now; an error only says it was reaped already.
        let _ = self.agent.wait();
    }
}

/// The charm's own binary beside this test binary (cargo builds it for the package's tests):
/// what runs `supervise` in the machine.
pub fn charm_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("etcd-charm");
    assert!(
        bin.exists(),
        "{} is missing: cargo build it first",
        bin.display()
    );
    bin
}

/// The hook process: runs only when `Machine::run` started this binary for it.
#[test]
fn hook_child() {
    let Some(dir) = std::env::var_os("HOOK_CHILD_DIR").map(PathBuf::from) else {
        return;
    };
    let world: World =
        serde_json::from_slice(&std::fs::read(dir.join("world.json")).unwrap()).unwrap();
    std::fs::create_dir_all(format!(
        "/var/lib/juju/agents/unit-{}",
        world.unit.replace('/', "-")
    ))
    .unwrap();
    let fake: &'static FakeJuju = Box::leak(Box::new(FakeJuju::new(world)));
    struct Shared(&'static FakeJuju);
    impl charmkit::juju::Backend for Shared {
        fn run(&self, t: &str, a: &[&str], s: Option<&str>) -> charmkit::juju::Result<String> {
            self.0.run(t, a, s)
        }
    }
    charmkit::juju::set_backend(Box::new(Shared(fake))).unwrap();
    etcdkit::service::set_supervisor(charm_binary());
    let ctx = charmkit::juju::Context::from_env();
    let r = if ctx.dispatch.starts_with("actions/") {
        crate::actions::run(&ctx)
    } else {
        crate::hook::hook(&ctx)
    };
    let world = fake.finish(r.is_ok());
    std::fs::write(dir.join("world.json"), serde_json::to_vec(&world).unwrap()).unwrap();
    let ran = Ran {
        ok: r.is_ok(),
        error: r.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    };
    std::fs::write(dir.join("ran.json"), serde_json::to_vec(&ran).unwrap()).unwrap();
}
