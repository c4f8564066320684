//! Phase 2, `certificates`: the CA (built in, or easyrsa's), the leader's signing and CA moves, this unit's certificates.

use super::state::*;
use crate::pki;
use crate::pki::authority;
use crate::pki::certs::{install_certs, leader_sign, overdue_certificate, plan_ca_move};
use crate::unit::peers::Key;
use crate::unit::status::mark;
use crate::unit::status::Level;
use anyhow::Result;

impl<'a> Reconcile<'a> {
    /// Phase 2.
    pub(super) fn certificates(&mut self) -> Result<()> {
        let unit = self.ctx.unit.clone();
        let sans = crate::config::sans::for_unit(&self.cfg.certificate_extra_sans, &unit);
        let names: Vec<String> = self.names.iter().cloned().chain(sans).collect();
        let mut refused = false;
        self.provided = match crate::pki::exchange::exchange(
            &unit,
            &self.address,
            &names,
            Some(&mut *self.st),
            &mut self.peers,
            self.leader,
        )? {
            Ok(p) => {
                if let Some(note) = p.as_ref().and_then(|p| p.note.as_deref()) {
                    self.board.report(Level::Maintenance, note);
                }
                p
            }
            Err(msg) => {
                self.board.report(Level::Blocked, msg);
                refused = true;
                None
            }
        };
        // A provider that refused this unit's request (or answered what cannot be used) is
        // still the CA the relation names: the leader moves no CA on such an answer (least
        // of all back to the built-in one, which the provider's clients do not trust). Nor
        // on silence while the cluster is on the provider's CA (a provider whose answers
        // are gone for a while, a departing provider unit): only the relation's end moves
        // the cluster back to the built-in CA.
        let silent = self.provided.is_none() && self.on_provider_ca() && authority::related()? && {
            let ending = |h: &crate::juju::Hook| {
                h.is_relation(authority::ENDPOINT, crate::juju::RelationEvent::Broken)
            };
            !self.ctx.hook_is(ending)
        };
        if self.leader {
            self.leader_pki(&unit, refused || silent)?;
        }
        mark("leader-pki");
        // Related to a CA that has not answered yet, before anything runs: wait for it
        // rather than start on the built-in CA and move at once.
        let nothing_started = self.peers.started().next().is_none();
        self.certified = if self.provided.is_none() && nothing_started && authority::related()? {
            self.board.report(
                Level::Waiting,
                "Waiting for the CA on the certificates relation",
            );
            false
        } else {
            install_certs(
                &self.peers,
                &unit,
                &self.name,
                &self.csrs,
                self.provided.as_ref(),
            )?
        };
        self.report_tls()?;
        self.publish_running_trust();
        for side in [authority::Side::CLIENT, authority::Side::PEER] {
            if let Some(step) = self.peers.app_get(side.step) {
                self.board
                    .report(Level::Maintenance, format!("{}{step}", side.label()));
            }
        }
        if let Some(msg) = overdue_certificate() {
            self.board.report(Level::Blocked, msg);
        }
        Ok(())
    }

    /// The leader's side: this unit's CSR signed by the built-in CA, the CA move planned
    /// from what the units report, the shared client pair published and renewed when due
    /// (or when a client relation that had it went).
    fn leader_pki(&mut self, unit: &str, hold_ca: bool) -> Result<()> {
        leader_sign(
            &mut self.peers,
            unit,
            std::slice::from_ref(&self.address),
            self.cfg.tls_certificate_lifetime,
        )?;
        let internal = self.peers.app_get(Key::Ca).unwrap_or_default().to_string();
        if !hold_ca {
            plan_ca_move(&mut self.peers, &internal, self.provided.as_ref());
        }
        crate::pki::certs::publish_client_sha(&mut self.peers)?;
        // A client relation that goes takes the shared pair with it: the others get a
        // new one (the departed application's copy is not renewed).
        let gone = |e: &str| {
            self.ctx
                .hook_is(|h| h.is_relation(e, crate::juju::RelationEvent::Broken))
        };
        let why = if gone("db") || gone("proxy") || gone("prometheus") {
            crate::pki::certs::ClientRenewal::RelationGone
        } else {
            crate::pki::certs::ClientRenewal::Due
        };
        crate::pki::certs::renew_client(&mut self.peers, self.cfg.tls_certificate_lifetime, why)?;
        Ok(())
    }

    /// Whether the client port's certificates come from a CA other than the built-in one.
    fn on_provider_ca(&self) -> bool {
        let internal = self.peers.app_get(Key::Ca);
        self.peers
            .app_get(Key::IssuerCa)
            .is_some_and(|i| internal.is_some_and(|c| c != i))
    }

    /// What the leader's CA moves wait for: the CA of the certificates this unit serves
    /// with on each port and the bundles its etcd started with.
    fn report_tls(&mut self) -> Result<()> {
        let mut known = authority::split(self.peers.app_get(Key::Trust).unwrap_or_default());
        for k in [Key::Ca, Key::PeerCa, Key::PeerTrust] {
            known.extend(authority::split(self.peers.app_get(k).unwrap_or_default()));
        }
        known.extend(self.provided.as_ref().map(|p| p.ca.clone()));
        for side in [authority::Side::CLIENT, authority::Side::PEER] {
            let in_use = std::fs::read_to_string(pki::path(side.cert_file))
                .ok()
                .and_then(|c| authority::issuer_of(&c, &known));
            self.set(side.issuer_in_use, in_use.as_deref().unwrap_or(""));
        }
        let digest = |f: &str| {
            std::fs::read_to_string(pki::path(f))
                .ok()
                .map(|t| authority::sha16(&t))
        };
        self.trust_on_disk = digest(authority::Side::CLIENT.bundle_file);
        self.peer_trust_on_disk = digest(authority::Side::PEER.bundle_file);
        if self.st.running_trust.is_none() && self.svc.running()? {
            // A unit from before the CA move: etcd runs with what is on disk.
            self.st.running_trust = self.trust_on_disk.clone();
        }
        if self.st.running_peer_trust.is_none() && self.svc.running()? {
            // A unit from before the peer CA: its peer port trusts the client port's bundle.
            self.st.running_peer_trust = self.st.running_trust.clone();
        }
        Ok(())
    }
}
