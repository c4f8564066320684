//! Machines: `show-machine`, and the harness's faults (`cut-network`, `heal-network`,
//! `crash-machine`, `start-machine`, `reboot-machine`).

use super::*;

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
