//! Turns the shipped `swarm/haproxy.cfg` into the local one. Only addresses
//! change: the blocks between `# BEGIN <name>` and `# END <name>` markers
//! that name Swarm addresses are replaced by loopback ones; the binds come
//! from `VOTE_BIND`, `RESULTS_BIND` and `STATS_BIND` in HAProxy's
//! environment. Timeouts, health
//! checks, retries and rate limits stay exactly as shipped.

use super::ClusterError;

/// The local addresses.
pub struct Local {
    /// `host:port` of each capture node.
    pub capture: Vec<String>,
    pub results: String,
}

/// Process-level settings that only make sense for a packaged HAProxy
/// running as root (we run it in the foreground as ourselves).
const DROPPED_GLOBAL: &[&str] = &[
    "daemon",
    "chroot",
    "user",
    "group",
    "stats socket",
    "master-worker",
];

pub fn render(template: &str, local: &Local) -> Result<String, ClusterError> {
    let mut out = String::with_capacity(template.len() + 512);
    let mut skipping: Option<String> = None;
    let mut found = std::collections::BTreeSet::new();
    let mut section = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("# BEGIN ") {
            let name = name.trim().to_owned();
            let indent = &line[..line.len() - line.trim_start().len()];
            match name.as_str() {
                "capture servers" => {
                    for (i, addr) in local.capture.iter().enumerate() {
                        out.push_str(&format!(
                            "{indent}server capture{:02} {addr} check\n",
                            i + 1
                        ));
                    }
                }
                "results servers" => {
                    out.push_str(&format!("{indent}server results {} check\n", local.results));
                }
                _ => {}
            }
            found.insert(name.clone());
            skipping = Some(name);
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("# END ") {
            if skipping.as_deref() == Some(name.trim()) {
                skipping = None;
                continue;
            }
        }
        if skipping.is_some() {
            continue;
        }
        if !line.starts_with(char::is_whitespace)
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
        {
            section = trimmed.to_owned();
        }
        if section == "global" && DROPPED_GLOBAL.iter().any(|k| trimmed.starts_with(k)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(open) = skipping {
        return Err(ClusterError::new(format!(
            "haproxy.cfg: `# BEGIN {open}` has no `# END {open}`"
        )));
    }
    if !found.contains("capture servers") {
        return Err(ClusterError::new(
            "haproxy.cfg: no `# BEGIN capture servers` block",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_changes_only_in_addresses() {
        let local = Local {
            capture: vec!["127.0.0.1:1001".into(), "127.0.0.1:1002".into()],
            results: "127.0.0.1:2001".into(),
        };
        let out = render(crate::cluster::HAPROXY_CFG, &local).unwrap();
        assert!(out.contains("server capture01 127.0.0.1:1001 check\n"));
        assert!(out.contains("server capture02 127.0.0.1:1002 check\n"));
        assert!(out.contains("server results 127.0.0.1:2001 check\n"));
        assert!(!out.contains("resolvers docker"), "{out}");
        assert!(!out.contains("server-template"));
        for kept in [
            "retry-on",
            "option httpchk GET /readyz",
            "timeout http-request",
            "VOTE_RATE_LIMIT",
        ] {
            assert!(out.contains(kept), "{kept} must survive");
        }
        // Every shipped line outside the address blocks is kept as it is.
        let mut in_block = false;
        for line in crate::cluster::HAPROXY_CFG.lines() {
            let t = line.trim();
            if t.starts_with("# BEGIN ") || t.starts_with("# END ") {
                in_block = t.starts_with("# BEGIN ");
                continue;
            }
            if in_block {
                continue;
            }
            assert!(out.lines().any(|l| l == line), "lost: {line}");
        }
    }

    #[test]
    fn an_unclosed_marker_is_an_error() {
        let local = Local {
            capture: vec![],
            results: String::new(),
        };
        assert!(render("backend x\n# BEGIN capture servers\n", &local).is_err());
        assert!(render("backend x\n", &local).is_err());
    }
}
