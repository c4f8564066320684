//! Machines: `show-machine`, and the harness's faults (`cut-network`, `heal-network`,
//! `crash-machine`, `start-machine`, `reboot-machine`).

use super::common::*;

/// `show-machine`
pub(super) async fn show_machine(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let v = ctl.model(&model, |m| {
        let mut out = Map::new();
        for (id, mach) in &m.machines {
            if p.positional.is_empty() || p.positional.contains(&id.to_string()) {
                out.insert(id.to_string(), json!({"address": mach.address, "hostname": mach.hostname, "status": mach.status, "init-pid": mach.init_pid, "netns": m.net().netns(*id), "network-cut": mach.cut, "unit": mach.unit}));
            }
        }
        Value::Object(out)
    })?;
    fmt_out(&v, &p, Format::Yaml)
}

/// `cut-network | heal-network | crash-machine | start-machine | reboot-machine`
pub(super) async fn cut_network(
    ctl: &Arc<Ctl>,
    cmd: &str,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let target = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("machine id or unit name required"))?;
    let id: u32 = match target.parse() {
        Ok(n) => n,
        Err(_) => ctl.model(&model, |m| -> Result<u32> {
            let u = resolve_unit(m, target)?;
            m.units
                .get(&u)
                .map(|x| x.machine)
                .ok_or_else(|| anyhow!("unit \"{u}\" not found"))
        })??,
    };
    if !ctl.model(&model, |m| m.machines.contains_key(&id))? {
        bail!("machine {id} not found");
    }
    match cmd {
        "cut-network" | "heal-network" => {
            let up = cmd == "heal-network";
            let net = ctl.model(&model, |m| m.net())?;
            machine::set_link(&net, id, up)?;
            ctl.mutate(|w| {
                w.models
                    .get_mut(&model)
                    .unwrap()
                    .machines
                    .get_mut(&id)
                    .unwrap()
                    .cut = !up
            });
        }
        "crash-machine" => ctl.crash_machine(&model, id).await,
        "start-machine" => {
            if ctl.model(&model, |m| {
                m.machines.get(&id).is_some_and(|x| x.status == "started")
            })? {
                bail!("machine {id} is already running");
            }
            ctl.start_machine(&model, id).await?;
        }
        _ => ctl.reboot(&model, id).await?,
    }
    Ok(Reply::ok(""))
}

/// `add-machine [-n N]`: empty machines, kept when units placed on them (`--to`) go, as
/// Juju keeps the machines it did not make for a unit.
pub(super) async fn add_machine(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[value(&["n"]), value(&["constraints"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    if let Some(spec) = p.positional.first() {
        bail!(
            "add-machine {spec:?}: this controller makes its own machines only \
             (no containers, no ssh: manual provisioning)"
        );
    }
    let n: u32 = p.value("n").unwrap_or("1").parse().context("-n")?;
    let constraints = crate::constraints::parse(p.values("constraints"))?;
    let ids = ctl.model_mut(&model, |m| -> Result<Vec<u32>> {
        Ok((0..n)
            .map(|_| {
                let id = m.new_machine(None, true);
                if let Some(mach) = m.machines.get_mut(&id) {
                    mach.constraints = constraints.clone();
                }
                id
            })
            .collect())
    })?;
    let mut stderr = String::new();
    for id in ids {
        ctl.provision(&model, id);
        stderr.push_str(&format!("created machine {id}\n"));
    }
    Ok(Reply {
        code: 0,
        stdout: String::new(),
        stderr,
    })
}

/// `remove-machine N...`: refused while a unit is on it, as Juju refuses.
pub(super) async fn remove_machine(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            boolean(&["force"]),
            boolean(&["no-prompt"]),
            boolean(&["no-wait"]),
            boolean(&["keep-instance"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let ids: Vec<u32> = p
        .positional
        .iter()
        .map(|a| a.parse().map_err(|_| anyhow!("invalid machine id {a:?}")))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("no machines specified");
    }
    ctl.model(&model, |m| -> Result<()> {
        for id in &ids {
            if !m.machines.contains_key(id) {
                bail!("machine {id} not found");
            }
            if let Some(u) = m.units_on(*id).first() {
                bail!("no machines were destroyed: machine {id} has unit \"{u}\" assigned");
            }
        }
        Ok(())
    })??;
    let mut stderr = String::new();
    for id in ids {
        ctl.remove_machine(&model, id).await;
        stderr.push_str(&format!("removing machine {id}\n"));
    }
    Ok(Reply {
        code: 0,
        stdout: String::new(),
        stderr,
    })
}
