//! Which etcd version steps are allowed, as etcd's upgrade notes say: patch steps, one minor
//! up, never down, never skipping a minor; into 3.6 only from 3.5.26 or later with an empty
//! v2 store, into 3.7 only from 3.6.11 or later. Pure: versions in, a decision out.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `3.5.16`, `v3.5.16` or `3.5.16-4` (a Debian revision) → 3.5.16.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+', '~']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next().unwrap_or(Some(0))?,
        };
        it.next().is_none().then_some(v)
    }

    fn minor_line(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl Version {
    /// Whether etcd serves the v2 API (`enable-v2`) at all: 3.6 removed it.
    pub fn has_v2_api(self) -> bool {
        (self.major, self.minor) < (3, 6)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The oldest patch release of the line before each minor that etcd's notes allow a rolling
/// upgrade from (3.6's notes: 3.5.26; 3.7's: 3.6.11).
pub fn minimum_before(target: Version) -> Option<Version> {
    match (target.major, target.minor) {
        (3, 6) => Some(Version {
            major: 3,
            minor: 5,
            patch: 26,
        }),
        (3, 7) => Some(Version {
            major: 3,
            minor: 6,
            patch: 11,
        }),
        _ => None,
    }
}

/// Whether a cluster running `from` may take `to`; the refusal says why and what to do.
pub fn check_step(from: Version, to: Version) -> Result<(), String> {
    if to == from {
        return Ok(());
    }
    if to < from {
        return Err(format!(
            "etcd {to} is older than the running {from}: etcd does not support downgrades; \
             attach etcd {from} or a later release"
        ));
    }
    if to.major != from.major {
        return Err(format!(
            "etcd {to} is a new major version; only 3.x steps are supported (running {from})"
        ));
    }
    if to.minor_line() == from.minor_line() {
        return Ok(());
    }
    if to.minor > from.minor + 1 {
        let next = Version {
            major: from.major,
            minor: from.minor + 1,
            patch: 0,
        };
        return Err(format!(
            "etcd {to} skips {}.{}: etcd upgrades one minor version at a time; upgrade to the \
             newest {}.{} release first",
            next.major, next.minor, next.major, next.minor
        ));
    }
    if let Some(min) = minimum_before(to) {
        if from < min {
            return Err(format!(
                "etcd {to} needs every member on {min} or later first (etcd's {}.{} upgrade \
                 notes); upgrade to {}.{}.{} or later first",
                to.major, to.minor, min.major, min.minor, min.patch
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_release_and_package_versions() {
        assert_eq!(v("3.5.16"), v("v3.5.16"));
        assert_eq!(v("3.5.30-2"), v("3.5.30"));
        assert_eq!(v("3.4"), v("3.4.0"));
        assert!(Version::parse("three").is_none());
        assert!(Version::parse("3.5.1.2").is_none());
        assert!(v("3.5.9") < v("3.5.16"));
    }

    #[test]
    fn patch_and_one_minor_up_are_allowed() {
        assert!(check_step(v("3.4.23"), v("3.5.16")).is_ok());
        assert!(check_step(v("3.5.16"), v("3.5.30")).is_ok());
        assert!(check_step(v("3.5.30"), v("3.5.30")).is_ok());
        assert!(check_step(v("3.5.26"), v("3.6.0")).is_ok());
        assert!(check_step(v("3.6.11"), v("3.7.0")).is_ok());
    }

    #[test]
    fn downgrades_skipped_minors_and_early_patches_are_refused_with_the_next_step() {
        let e = check_step(v("3.5.30"), v("3.5.16")).unwrap_err();
        assert!(e.contains("does not support downgrades"), "{e}");
        let e = check_step(v("3.4.23"), v("3.6.5")).unwrap_err();
        assert!(e.contains("skips 3.5") && e.contains("newest 3.5"), "{e}");
        let e = check_step(v("3.5.16"), v("3.6.5")).unwrap_err();
        assert!(e.contains("upgrade to 3.5.26 or later first"), "{e}");
        let e = check_step(v("3.6.2"), v("3.7.0")).unwrap_err();
        assert!(e.contains("3.6.11"), "{e}");
        assert!(check_step(v("3.5.16"), v("4.0.0")).is_err());
    }
}
