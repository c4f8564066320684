//! `scp` and `ssh` into a unit's (or machine's) machine. There is no sshd: the controller
//! enters the machine's mount namespace (`nsenter`) to read or write files there, and runs
//! commands through the machine agent. As with Juju, which logs in as `ubuntu` unless told
//! otherwise (cmd/juju/ssh: `ubuntu@` is the default user), every read, write and command
//! runs as that user: a root-owned 0600 file cannot be fetched, `sudo` is how to act as
//! root. A relative path on a machine means the `ubuntu` user's home, and what is copied
//! onto a machine belongs to that user.

use super::common::*;
use super::tasks::{tasks_reply, wait_tasks};
use std::process::Stdio;

const HOME: &str = "/home/ubuntu";

/// One side of a copy: a path on the host, or on a machine (its init's PID, for nsenter).
enum Side {
    Host(PathBuf),
    Machine {
        pid: u32,
        path: String,
        name: String,
    },
}

/// `<unit>:<path>`, `<app>/leader:<path>` or `<machine>:<path>` is on a machine; anything else
/// is on the host (relative to the directory the command was typed in).
fn side(ctl: &Ctl, model: &str, arg: &str, cwd: &Path) -> Result<Side> {
    let Some((target, path)) = arg.split_once(':').filter(|(t, _)| {
        !t.is_empty() && !t.contains('.') && (t.contains('/') || t.parse::<u32>().is_ok())
    }) else {
        return Ok(Side::Host(cwd.join(arg)));
    };
    if path.is_empty() {
        bail!("{arg:?}: no path after the colon (a relative path means {HOME})");
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{HOME}/{path}")
    };
    let (_, pid) = running_machine(ctl, model, target)?;
    let name = target.to_string();
    Ok(Side::Machine { pid, path, name })
}

/// The machine a unit (`etcd/0`, `etcd/leader`) or machine id names, and its init's PID;
/// an error when it does not exist or is not running.
fn running_machine(ctl: &Ctl, model: &str, target: &str) -> Result<(u32, u32)> {
    let (id, pid) = ctl.model(model, |m| -> Result<(u32, Option<u32>)> {
        let id = match target.parse::<u32>() {
            Ok(id) => id,
            Err(_) => {
                let unit = resolve_unit(m, target)?;
                m.units
                    .get(&unit)
                    .map(|u| u.machine)
                    .ok_or_else(|| anyhow!("unit \"{unit}\" not found"))?
            }
        };
        let mach = m
            .machines
            .get(&id)
            .ok_or_else(|| anyhow!("machine {id} not found"))?;
        Ok((
            id,
            (mach.status == "started")
                .then_some(mach.init_pid)
                .flatten(),
        ))
    })??;
    let pid = pid.ok_or_else(|| anyhow!("{target}'s machine is not running"))?;
    Ok((id, pid))
}

/// Runs `argv` as the `ubuntu` user in the machine's mount namespace with `input` as
/// stdin; its stdout is returned, a failure carries its stderr.
async fn in_machine(pid: u32, argv: &[&str], input: Option<std::fs::File>) -> Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!("--target={pid}"))
        .args(["--mount", "--", "runuser", "-u", "ubuntu", "--"])
        .args(argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(match input {
        Some(f) => Stdio::from(f),
        None => Stdio::null(),
    });
    let out = cmd.output().await.context("running nsenter")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// `scp [-r] <source> <destination>`: one side on a machine, the other on the host.
pub async fn scp(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            boolean(&["r"]),
            boolean(&["p"]),
            boolean(&["q"]),
            boolean(&["proxy"]),
            boolean(&["no-host-key-checks"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let [from, to] = p.positional.as_slice() else {
        bail!("scp takes a source and a destination, like etcd/0:etcd_credentials.tar.gz .");
    };
    let recursive = p.flag("r");
    match (side(ctl, &model, from, cwd)?, side(ctl, &model, to, cwd)?) {
        (Side::Machine { pid, path, name }, Side::Host(dest)) => {
            pull(pid, &path, &name, &dest, recursive).await?
        }
        (Side::Host(src), Side::Machine { pid, path, name }) => {
            push(&src, pid, &path, &name, recursive).await?
        }
        (Side::Host(_), Side::Host(_)) => {
            bail!("scp: neither {from:?} nor {to:?} names a unit or machine (like etcd/0:path)")
        }
        (Side::Machine { .. }, Side::Machine { .. }) => {
            bail!("scp: copy from one machine to another through the host")
        }
    }
    Ok(Reply::ok(""))
}

/// What kind of file `path` is on the machine: "f" (a regular file), "d" or missing.
async fn kind_on_machine(pid: u32, path: &str) -> Result<Option<char>> {
    let out = in_machine(
        pid,
        &[
            "sh",
            "-c",
            "if [ -d \"$1\" ]; then echo d; elif [ -f \"$1\" ]; then echo f; else echo -; fi",
            "sh",
            path,
        ],
        None,
    )
    .await?;
    Ok(match String::from_utf8_lossy(&out).trim() {
        "d" => Some('d'),
        "f" => Some('f'),
        _ => None,
    })
}

async fn pull(pid: u32, path: &str, name: &str, dest: &Path, recursive: bool) -> Result<()> {
    let kind = kind_on_machine(pid, path)
        .await?
        .ok_or_else(|| anyhow!("scp: {name}:{path}: No such file or directory"))?;
    let base = Path::new(path)
        .file_name()
        .ok_or_else(|| anyhow!("scp: {name}:{path} names no file"))?;
    let target = if dest.is_dir() {
        dest.join(base)
    } else {
        dest.to_path_buf()
    };
    let parent = target.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        bail!("scp: {}: No such file or directory", parent.display());
    }
    if kind == 'd' {
        if !recursive {
            bail!("scp: {name}:{path}: not a regular file (use -r for a directory)");
        }
        let tar = in_machine(pid, &["tar", "-C", path, "-cf", "-", "."], None).await?;
        std::fs::create_dir_all(&target)?;
        tar::Archive::new(&tar[..])
            .unpack(&target)
            .with_context(|| format!("unpacking {name}:{path} into {}", target.display()))?;
        return Ok(());
    }
    // The file's bytes and mode, written under a temporary name and renamed once complete.
    let bytes = in_machine(pid, &["cat", "--", path], None).await?;
    let mode = in_machine(pid, &["stat", "-c", "%a", "--", path], None).await?;
    let mode = u32::from_str_radix(String::from_utf8_lossy(&mode).trim(), 8).unwrap_or(0o600);
    let tmp = target.with_file_name(format!(
        ".{}.scp",
        target.file_name().unwrap_or_default().to_string_lossy()
    ));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode & 0o777)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &target).with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}

async fn push(src: &Path, pid: u32, path: &str, name: &str, recursive: bool) -> Result<()> {
    let meta = std::fs::metadata(src).map_err(|e| anyhow!("scp: {}: {e}", src.display()))?;
    let base = src
        .file_name()
        .ok_or_else(|| anyhow!("scp: {} names no file", src.display()))?
        .to_string_lossy()
        .into_owned();
    let target = match kind_on_machine(pid, path).await? {
        Some('d') => format!("{}/{base}", path.trim_end_matches('/')),
        _ => path.to_string(),
    };
    // Written by the ubuntu user (`in_machine`), so it owns the copy, as over ssh.
    if meta.is_dir() {
        if !recursive {
            bail!(
                "scp: {}: not a regular file (use -r for a directory)",
                src.display()
            );
        }
        let mut tar = tar::Builder::new(tempfile::tempfile()?);
        tar.append_dir_all(".", src)?;
        let mut file = tar.into_inner()?;
        use std::io::Seek;
        file.rewind()?;
        let script = "mkdir -p -- \"$1\" && tar -C \"$1\" -xf -";
        in_machine(pid, &["sh", "-c", script, "sh", &target], Some(file))
            .await
            .map_err(|e| anyhow!("scp: {name}:{target}: {e}"))?;
        return Ok(());
    }
    let file = std::fs::File::open(src).map_err(|e| anyhow!("scp: {}: {e}", src.display()))?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o777
    };
    let script = format!(
        "d=$(dirname -- \"$1\"); [ -d \"$d\" ] || {{ echo \"$d: No such file or directory\" >&2; exit 1; }}; \
         t=\"$d/.$(basename -- \"$1\").scp\"; (umask 077; cat > \"$t\") && chmod {mode:o} \"$t\" && mv -f \"$t\" \"$1\""
    );
    in_machine(pid, &["sh", "-c", &script, "sh", &target], Some(file))
        .await
        .map_err(|e| anyhow!("scp: {name}:{target}: {e}"))?;
    Ok(())
}

/// `ssh <unit|machine> <command ...>`: runs the command on the machine (in the ubuntu
/// user's home), its output and exit code passed through. No interactive shell: there is
/// no terminal between the client and the controller.
pub async fn ssh(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    // Everything after the target is the remote command, flags included.
    let mut own = vec![];
    let mut iter = args.iter();
    let mut target = None;
    for a in iter.by_ref() {
        if a.starts_with('-') {
            own.push(a.clone());
        } else {
            target = Some(a.clone());
            break;
        }
    }
    let command: Vec<String> = iter.cloned().collect();
    let p = parse(
        &[
            boolean(&["proxy"]),
            boolean(&["pty"]),
            boolean(&["no-host-key-checks"]),
        ],
        &own,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let target = target.ok_or_else(|| anyhow!("ssh: no unit or machine given"))?;
    if command.is_empty() {
        bail!("ssh {target}: the local controller has no interactive shells; give a command (juju ssh {target} hostname)");
    }
    let (id, _) = running_machine(ctl, &model, &target)?;
    let script = format!(
        "export USER=ubuntu LOGNAME=ubuntu; cd {HOME} 2>/dev/null || cd /; {}",
        command.join(" ")
    );
    shell_on_machine(ctl, &model, id, script, HOME, "/", Some("ubuntu")).await
}
/// Runs `script` with bash on a started machine through its agent (PATH, LANG, and HOME
/// set to `home`), from `cwd`; its output and exit code as the reply.
pub(super) async fn shell_on_machine(
    ctl: &Ctl,
    model: &str,
    id: u32,
    script: String,
    home: &str,
    cwd: &str,
    user: Option<&str>,
) -> Result<Reply> {
    let up = ctl.model(model, |m| {
        m.machines.get(&id).map(|x| x.status == "started")
    })?;
    if up != Some(true) {
        bail!("machine {id} is not running");
    }
    let sock = machine::agent_socket(&controller::model_dir(&ctl.home, model), id);
    let env = BTreeMap::from([
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".to_string(), home.to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    let (r, _) = machine::agent_call(
        &sock,
        &AgentRequest::Run {
            argv: match user {
                Some(u) => ["runuser", "-u", u, "--", "/bin/bash", "-c", &script]
                    .map(String::from)
                    .to_vec(),
                None => vec!["/bin/bash".into(), "-c".into(), script],
            },
            env,
            cwd: cwd.into(),
        },
    )
    .await?;
    Ok(Reply {
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
    })
}

pub(super) async fn exec(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            FORMAT,
            value(&["wait"]),
            value(&["unit", "u"]),
            value(&["machine"]),
            value(&["application", "a"]),
            boolean(&["all"]),
            boolean(&["background"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    if p.positional.is_empty() {
        bail!("no commands specified");
    }
    let command = p.positional.clone();
    let wait = p.value("wait").and_then(controller::parse_duration);
    if let Some(mid) = p.value("machine") {
        let id: u32 = mid.parse().context("--machine")?;
        let r =
            shell_on_machine(ctl, &model, id, command.join(" "), "/root", "/root", None).await?;
        if p.value("format") == Some("json") {
            let v = json!({ format!("machine-{id}"): {"id": "0", "status": "completed", "machine": id.to_string(), "results": {"return-code": r.code, "stdout": r.stdout, "stderr": r.stderr}}});
            return Ok(Reply::ok(render(&v, Format::Json)));
        }
        return Ok(r);
    }
    let ids = ctl.model_mut(&model, |m| -> Result<Vec<u64>> {
        let mut units: Vec<String> = vec![];
        for u in p.values("unit").iter().flat_map(|v| v.split(',')) {
            units.push(resolve_unit(m, u)?);
        }
        for a in p.values("application").iter().flat_map(|v| v.split(',')) {
            units.extend(m.units.values().filter(|u| u.app == a).map(|u| u.name.clone()));
        }
        if units.is_empty() {
            bail!("you must specify a target, either through --all, --machine, --application or --unit");
        }
        let mut ids = vec![];
        for unit in units {
            m.next_task += 1;
            let id = m.next_task;
            m.tasks.insert(
                id,
                Task { id, unit: unit.clone(), action: "juju-exec".into(), params: json!({}), status: "pending".into(), message: String::new(), results: Default::default(), log: vec![], enqueued: now_juju(), started: String::new(), completed: String::new(), return_code: None, stdout: String::new(), stderr: String::new(), command: Some(command.clone()) },
            );
            m.units.get_mut(&unit).unwrap().actions.push_back(id);
            ids.push(id);
        }
        Ok(ids)
    })?;
    match wait_tasks(ctl, &model, &ids, wait).await {
        Some(tasks) => Ok(tasks_reply(&tasks, &p, true)),
        None => Ok(Reply {
            code: 1,
            stdout: String::new(),
            stderr: "ERROR timed out waiting for results\n".into(),
        }),
    }
}
