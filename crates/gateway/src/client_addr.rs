//! The client's address behind an ingress, on the public listener. The TCP peer, unless the
//! peer is one of the configured proxies (`gateway.trusted_proxies`): then the address the
//! proxies recorded in the one header the ingress writes (`gateway.client_address_header`:
//! `X-Forwarded-For`, or RFC 7239's `Forwarded`), walking from the nearest hop back past every
//! trusted proxy. Only that header: an ingress that rewrites one passes the other through as
//! the client sent it. A header from anyone else is ignored, so a client cannot choose the
//! address the audit log records. Hand-written: the grammar used is small, and the trust walk
//! is hepdb's own policy.

use std::net::{IpAddr, SocketAddr};

use actix_web::{HttpRequest, http::header::HeaderMap, web};
use ipnet::IpNet;

/// The client's address of `req`: by the proxies its app trusts, which only the public app
/// has (`App::app_data`); the TCP peer elsewhere (the platform listener).
pub fn of(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip());
    match req.app_data::<web::Data<TrustedProxies>>() {
        Some(proxies) => proxies.client(peer, req.headers()),
        None => peer,
    }
}

/// The networks whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    forwarded: bool,
}

impl TrustedProxies {
    /// A comma-separated list of networks (`10.0.0.0/8`) or addresses (empty trusts none), and
    /// the header they write: `x-forwarded-for` or `forwarded`.
    pub fn parse(list: &str, header: &str) -> Result<Self, String> {
        let forwarded = match header.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => false,
            "forwarded" => true,
            other => return Err(format!("`{other}` is not x-forwarded-for or forwarded")),
        };
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let net = s
                    .parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{s}` is not a network like 10.0.0.0/8"))?;
                // Trusting everyone lets every client choose the address the audit log and
                // the rate limits see.
                if net.prefix_len() == 0 {
                    return Err(format!(
                        "`{s}` trusts every address: name the ingress's own networks"
                    ));
                }
                Ok(net)
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { nets, forwarded })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops = if self.forwarded {
            forwarded(headers)
        } else {
            x_forwarded_for(headers)
        };
        let Some(hops) = hops else {
            return Some(peer);
        };
        // Nearest hop last. Each trusted address vouches for the hop before it; the first
        // address not trusted is the client. A hop that names no address stops the walk at the
        // last proxy that could be believed.
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.trusts(*ip) => client = *ip,
                Some(ip) => return Some(*ip),
                None => break,
            }
        }
        Some(client)
    }
}

/// The `for=` of every element of every `Forwarded` header, in order; `None` for an element
/// without a usable address (`unknown`, an obfuscated name, garbage).
fn forwarded(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let values: Vec<&str> = headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    let hops = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| node(value.trim().trim_matches('"')))?
            })
        })
        .collect();
    Some(hops)
}

/// A `Forwarded` node: `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::17]` or
/// `[2001:db8::17]:4711`.
fn node(value: &str) -> Option<IpAddr> {
    if let Some(v6) = value.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    value
        .parse()
        .ok()
        .or_else(|| value.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(|hop| node(hop.trim()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7", "x-forwarded-for").unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        // A client that sends the header itself is recorded as itself.
        assert_eq!(trusted.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // The ingress's word is taken.
        assert_eq!(trusted.client(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        assert_eq!(trusted.client(ip("192.168.1.7"), &h), ip("203.0.113.9"));
        // No proxies configured: nobody is believed.
        let none = TrustedProxies::parse("", "x-forwarded-for").unwrap();
        assert_eq!(none.client(ip("10.1.2.3"), &h), ip("10.1.2.3"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop() {
        let trusted = TrustedProxies::parse("10.0.0.0/8", "x-forwarded-for").unwrap();
        // The client forged the first entry; the ingress appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // Garbage stops the walk at the last believable proxy.
        let h = headers(&[("x-forwarded-for", "not-an-ip, 10.0.0.5")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("10.0.0.5"));
    }

    #[test]
    fn only_the_configured_header_counts() {
        // nginx rewrites X-Forwarded-For and passes a client's own Forwarded through.
        let xff = TrustedProxies::parse("10.0.0.0/8", "x-forwarded-for").unwrap();
        let h = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(xff.client(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        let h = headers(&[("forwarded", "for=1.2.3.4")]);
        assert_eq!(xff.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        assert!(TrustedProxies::parse("10.0.0.0/8", "x-real-ip").is_err());
    }

    #[test]
    fn forwarded_in_all_its_forms() {
        let trusted = TrustedProxies::parse("10.0.0.0/8", "forwarded").unwrap();
        for (value, want) in [
            ("for=203.0.113.9", "203.0.113.9"),
            ("For=\"203.0.113.9:4711\";proto=https", "203.0.113.9"),
            ("for=\"[2001:db8::17]:4711\"", "2001:db8::17"),
            (
                "for=198.51.100.1, for=203.0.113.9;by=10.0.0.1",
                "203.0.113.9",
            ),
        ] {
            let h = headers(&[("forwarded", value), ("x-forwarded-for", "192.0.2.1")]);
            assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip(want), "{value}");
        }
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33", "forwarded").is_err());
        assert!(TrustedProxies::parse("ingress", "forwarded").is_err());
        // Trusting every address would let every client choose its own.
        for everyone in ["0.0.0.0/0", "::/0", "10.0.0.0/8, 0.0.0.0/0"] {
            let err = TrustedProxies::parse(everyone, "x-forwarded-for").unwrap_err();
            assert!(err.contains("every address"), "{everyone}: {err}");
        }
    }
}
