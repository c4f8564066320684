//! The ports: etcd's client and peer ports and the loopback metrics listener of `cos-agent`.

/// `cos_metrics_port`: etcd's loopback metrics listener (the charm's own metrics on the next
/// port), clear of the client, peer and plain-http ports.
pub fn cos_port(p: i64, port: i64, mport: i64) -> Result<u16, String> {
    if !(1024..=65534).contains(&p) {
        return Err(format!(
            "invalid config: cos_metrics_port {p} is out of range 1024-65534 (the charm's metrics take the next port)"
        ));
    }
    for (name, other) in [
        ("port", port),
        ("management_port", mport),
        ("the plain-http listener", 4001),
    ] {
        if p == other || p + 1 == other {
            return Err(format!(
                "invalid config: cos_metrics_port {p} and the next port must be clear of {name} ({other}); choose another port"
            ));
        }
    }
    Ok(p as u16)
}

/// `port` and `management_port`: in range, different, clear of the plain-http listener.
pub fn ports(port: i64, mport: i64, insecure_http: bool) -> Result<(i64, i64), String> {
    for (name, p) in [("port", port), ("management_port", mport)] {
        if !(1..=65535).contains(&p) {
            return Err(format!(
                "invalid config: {name} {p} is out of range 1-65535"
            ));
        }
    }
    if port == mport {
        return Err(format!(
            "invalid config: port and management_port are both {port}; choose two different ports"
        ));
    }
    if insecure_http {
        for (name, p) in [("port", port), ("management_port", mport)] {
            if p == 4001 {
                return Err(format!("invalid config: {name} 4001 is taken by bind_with_insecure_http (its plain-http listener); choose another port"));
            }
        }
    }
    Ok((port, mport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_ports_stay_clear_of_etcds_and_of_each_other() {
        assert_eq!(cos_port(2381, 2379, 2380), Ok(2381));
        for (p, says) in [
            (2378, "port (2379)"),
            (2379, "port (2379)"),
            (2380, "management_port (2380)"),
            (4000, "plain-http listener (4001)"),
            (80, "out of range"),
            (65535, "out of range"),
        ] {
            let e = cos_port(p, 2379, 2380).unwrap_err();
            assert!(
                e.contains("cos_metrics_port") && e.contains(says),
                "{p}: {e}"
            );
        }
    }
}
