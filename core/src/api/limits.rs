//! Consul's limits on user-supplied metadata (`structs.ValidateMetadata`): node and service `Meta` maps
//! take at most 64 pairs, keys of at most 128 characters from `[A-Za-z0-9_-]`, not starting with the
//! reserved `consul-`, and values of at most 512 characters. Errors read exactly as Consul's, so callers
//! prefix them the way Consul's endpoints do (`Invalid Service Meta: …`).

use std::collections::BTreeMap;

/// Most key/value pairs in one `Meta` map (`metaMaxKeyPairs`).
pub const META_MAX_PAIRS: usize = 64;
/// Longest meta key, in characters (`metaKeyMaxLength`).
pub const META_KEY_MAX_LEN: usize = 128;
/// Longest meta value, in characters (`metaValueMaxLength`).
pub const META_VALUE_MAX_LEN: usize = 512;
/// Keys with this prefix are Consul's own (`metaKeyReservedPrefix`).
pub const META_RESERVED_PREFIX: &str = "consul-";

/// Check a node's or service's `Meta`; `what` names it in the count error (`Node`, `Service`).
pub fn validate_meta(meta: &BTreeMap<String, String>, what: &str) -> Result<(), String> {
    if meta.len() > META_MAX_PAIRS {
        return Err(format!(
            "{what} metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
        ));
    }
    for (key, value) in meta {
        if key.is_empty() {
            return Err("Key cannot be blank".into());
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("Key contains invalid characters: {key:?}"));
        }
        if key.len() > META_KEY_MAX_LEN {
            return Err(format!("Key is too long (limit: {META_KEY_MAX_LEN} characters)"));
        }
        if key.starts_with(META_RESERVED_PREFIX) {
            return Err(format!(
                "Key prefix '{META_RESERVED_PREFIX}' is reserved for internal use"
            ));
        }
        if value.chars().count() > META_VALUE_MAX_LEN {
            return Err(format!("Value is too long (limit: {META_VALUE_MAX_LEN} characters)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn consul_meta_limits() {
        assert_eq!(validate_meta(&meta(&[("rack", "a"), ("a_b-C9", "")]), "Node"), Ok(()));
        let full: BTreeMap<String, String> = (0..64).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(validate_meta(&full, "Service"), Ok(()));
        let mut over = full.clone();
        over.insert("k64".into(), "v".into());
        assert_eq!(
            validate_meta(&over, "Service").unwrap_err(),
            "Service metadata cannot contain more than 64 key/value pairs"
        );
        let key128 = "k".repeat(128);
        assert_eq!(validate_meta(&meta(&[(&key128, "v")]), "Node"), Ok(()));
        let key129 = "k".repeat(129);
        assert_eq!(
            validate_meta(&meta(&[(&key129, "v")]), "Node").unwrap_err(),
            "Key is too long (limit: 128 characters)"
        );
        let v512 = "é".repeat(512);
        assert_eq!(
            validate_meta(&meta(&[("k", &v512)]), "Node"),
            Ok(()),
            "characters, not bytes"
        );
        let v513 = "v".repeat(513);
        assert_eq!(
            validate_meta(&meta(&[("k", &v513)]), "Node").unwrap_err(),
            "Value is too long (limit: 512 characters)"
        );
        assert!(validate_meta(&meta(&[("", "v")]), "Node").is_err());
        assert!(validate_meta(&meta(&[("a.b", "v")]), "Node").is_err());
        assert!(validate_meta(&meta(&[("a/b", "v")]), "Node").is_err());
        assert!(validate_meta(&meta(&[("consul-version", "v")]), "Node")
            .unwrap_err()
            .contains("reserved"));
    }
}
