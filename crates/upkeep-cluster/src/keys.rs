//! Where upkeep's keys live under the configured prefix:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `<prefix>/lock` | node name of the holder | the holder's |
//! | `<prefix>/nodes/<node>` | [`crate::NodeRecord`] JSON | the node's (expires with it) |
//! | `<prefix>/masters/<node>` | node name | none: remembers a master whose record expired |
//! | `<prefix>/halts/<service>/<hash>` | [`crate::HaltRecord`] JSON | none |
//!
//! Names are escaped (`%` → `%25`, `/` → `%2F`) so a static pod's
//! `<pod>/<container>` service name stays one path segment.

/// The key layout under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// Escapes a name into one key segment.
pub fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// Reverses [`escape`].
pub fn unescape(seg: &str) -> String {
    seg.replace("%2F", "/").replace("%25", "%")
}

impl Keys {
    /// The layout under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The cluster lock.
    pub fn lock(&self) -> String {
        format!("{}/lock", self.prefix)
    }

    /// Every node record.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// One node's record.
    pub fn node(&self, node: &str) -> String {
        format!("{}{}", self.nodes(), escape(node))
    }

    /// Every known master.
    pub fn masters(&self) -> String {
        format!("{}/masters/", self.prefix)
    }

    /// One known master.
    pub fn master(&self, node: &str) -> String {
        format!("{}{}", self.masters(), escape(node))
    }

    /// Every halt.
    pub fn halts(&self) -> String {
        format!("{}/halts/", self.prefix)
    }

    /// Every halt of one service.
    pub fn halts_of(&self, service: &str) -> String {
        format!("{}{}/", self.halts(), escape(service))
    }

    /// The halt of one change (spec hash) of one service.
    pub fn halt(&self, service: &str, hash: &str) -> String {
        format!("{}{}", self.halts_of(service), escape(hash))
    }

    /// The name after `under` in `key` (unescaped), if `key` is under it.
    pub fn name_under(key: &str, under: &str) -> Option<String> {
        key.strip_prefix(under)
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(unescape)
    }

    /// `(service, hash)` of a halt key.
    pub fn parse_halt(&self, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(&self.halts())?;
        let (service, hash) = rest.split_once('/')?;
        (!service.is_empty() && !hash.is_empty() && !hash.contains('/'))
            .then(|| (unescape(service), unescape(hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trips() {
        let k = Keys::new("/upkeep/");
        assert_eq!(k.lock(), "/upkeep/lock");
        assert_eq!(k.node("m1"), "/upkeep/nodes/m1");
        assert_eq!(k.halt("etcd/etcd", "abc"), "/upkeep/halts/etcd%2Fetcd/abc");
        assert_eq!(
            k.parse_halt(&k.halt("etcd/etcd", "abc")),
            Some(("etcd/etcd".into(), "abc".into()))
        );
        assert_eq!(
            Keys::name_under(&k.node("a%b/c"), &k.nodes()).as_deref(),
            Some("a%b/c")
        );
        assert_eq!(Keys::name_under("/upkeep/nodes/", &k.nodes()), None);
        // "a" and "a/b" do not share a halt prefix.
        assert!(!k.halt("a/b", "h").starts_with(&k.halts_of("a")));
    }
}
