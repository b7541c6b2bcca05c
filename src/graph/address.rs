//! The address map: which service answers at which address, so that a call whose server span is
//! missing (the service is down, or not instrumented) still lands on that service.
//!
//! Owns `AddressMap`. Entries come from two places: the addresses services' SERVER spans say they
//! answered on, and aliases supplied from outside (the manifest), which win over what was learned.
//!
//! Key design decisions:
//! - An address two services both claimed is *ambiguous* and resolves to nothing: guessing would
//!   draw a false edge, and an `ext:` node is the honest answer.
//! - A host without a port (`http.host: cart`, alias `cart`) stands for every port of that host.
//!   A lookup without a port accepts a host-only entry, else the host's single service over all
//!   ports when there is exactly one. Test setups run many services on `localhost` with different
//!   ports, so a host alone never picks among several services.
//! - Host names compare case-insensitively (stored lower-cased).

use std::collections::HashMap;
use std::fmt::Write;

use super::semconv;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Learned(String),
    /// From an alias: never made ambiguous by what is learned.
    Alias(String),
    Ambiguous,
}

#[derive(Debug, Default)]
pub struct AddressMap {
    /// `host:port`, or `host` for an entry that covers every port.
    exact: HashMap<String, Entry>,
    /// `host`, over all ports of learned and aliased `host:port` entries.
    any_port: HashMap<String, Entry>,
    /// Scratch key, so lookups allocate nothing.
    key: String,
}

impl AddressMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `service` answered at `host` (and `port`). Conflicting claims make the address
    /// ambiguous, unless an alias already pinned it.
    pub fn learn(&mut self, host: &str, port: Option<u16>, service: &str) {
        if host.is_empty() {
            return;
        }
        make_key(&mut self.key, host, port);
        merge(&mut self.exact, &self.key, service);
        if port.is_some() {
            make_key(&mut self.key, host, None);
            merge(&mut self.any_port, &self.key, service);
        }
    }

    /// Pins an address (`host`, `host:port`, or a URL) to a service, overriding anything learned.
    pub fn alias(&mut self, address: &str, service: &str) {
        let (host, port) = match semconv::parse_url(address) {
            Some(url) => (url.host, url.port),
            None => semconv::split_host_port(address.trim()),
        };
        if host.is_empty() {
            return;
        }
        make_key(&mut self.key, host, port);
        self.exact
            .insert(self.key.clone(), Entry::Alias(service.to_owned()));
        if port.is_some() {
            make_key(&mut self.key, host, None);
            merge(&mut self.any_port, &self.key, service);
        }
    }

    /// The service behind an address, when exactly one is known.
    pub fn lookup(&mut self, host: &str, port: Option<u16>) -> Option<&str> {
        let found = match port {
            Some(_) => {
                make_key(&mut self.key, host, port);
                if self.exact.contains_key(&self.key) {
                    self.exact.get(&self.key)
                } else {
                    make_key(&mut self.key, host, None);
                    self.exact.get(&self.key)
                }
            }
            None => {
                make_key(&mut self.key, host, None);
                self.exact
                    .get(&self.key)
                    .or_else(|| self.any_port.get(&self.key))
            }
        };
        match found? {
            Entry::Learned(s) | Entry::Alias(s) => Some(s),
            Entry::Ambiguous => None,
        }
    }
}

fn make_key(key: &mut String, host: &str, port: Option<u16>) {
    key.clear();
    semconv::push_lower(key, host);
    if let Some(port) = port {
        let _ = write!(key, ":{port}");
    }
}

fn merge(map: &mut HashMap<String, Entry>, key: &str, service: &str) {
    match map.get_mut(key) {
        Some(entry) => {
            if matches!(entry, Entry::Learned(existing) if existing != service) {
                *entry = Entry::Ambiguous;
            }
        }
        None => {
            map.insert(key.to_owned(), Entry::Learned(service.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_alone_never_picks_among_several_services() {
        let mut map = AddressMap::new();
        map.learn("localhost", Some(8081), "cart");
        map.learn("LocalHost", Some(8082), "payments");
        assert_eq!(map.lookup("localhost", Some(8081)), Some("cart"));
        assert_eq!(map.lookup("localhost", Some(8082)), Some("payments"));
        assert_eq!(map.lookup("localhost", None), None);
        assert_eq!(map.lookup("localhost", Some(9999)), None);
    }

    #[test]
    fn conflicting_claims_are_ambiguous_until_an_alias_pins_them() {
        let mut map = AddressMap::new();
        map.learn("gw", Some(80), "a");
        map.learn("gw", Some(80), "b");
        assert_eq!(map.lookup("gw", Some(80)), None);
        map.alias("http://gw", "b");
        map.learn("gw", Some(80), "a");
        assert_eq!(map.lookup("gw", Some(80)), Some("b"));
        map.alias("payments-api", "payments");
        assert_eq!(map.lookup("payments-api", Some(443)), Some("payments"));
        assert_eq!(map.lookup("payments-api", None), Some("payments"));
    }
}
