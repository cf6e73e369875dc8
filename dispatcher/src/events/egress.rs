//! The egress guard: which URLs and addresses the dispatcher may send a request to.
//!
//! Destinations and callbacks make the dispatcher POST to URLs that API callers chose, so they
//! must not reach what only the dispatcher's network can: loopback services, the cloud metadata
//! endpoint, private networks. A URL is checked twice. When it is given (a deploy, an invoke
//! with `X-Callback-Url`), its host is resolved and every address judged, so a refusal is a 400
//! that says why. When a request is sent, the HTTP client resolves names through
//! [`GuardedResolver`], which drops every refused address, so a name that now resolves
//! elsewhere (DNS rebinding) cannot reach a refused address either; an address written in the
//! URL itself is judged again before each send ([`check_literal`]). Redirects are never
//! followed and no proxy is used, so the address dialled is always one of those judged.
//!
//! The decisions ([`allowed`], [`classify`], [`permitted`], [`check_literal`]) are pure; only
//! [`check`] and the resolver look names up.

use reqwest::Url;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable of the operator's allowlist (`--egress-allow`).
pub const ENV_EGRESS_ALLOW: &str = "SQUALL_EGRESS_ALLOW";
/// How long resolving a URL's host at submit time may take before the URL is taken as it is
/// (the send-time check still applies).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// An address block: an address and how many of its leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this block (an IPv4 block never holds an IPv6 address; give
    /// IPv4-mapped addresses in their IPv4 form, as [`canonical`] does).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.1.0.0/16`, `fd00::/8`, or a bare address (the block of that address alone).
    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{text:?} has a prefix length outside 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the operator opened on purpose: address blocks and host names whose requests pass
/// whatever they resolve to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    blocks: Vec<Cidr>,
    /// Lower case, without a trailing dot.
    hosts: Vec<String>,
}

impl Allowlist {
    /// An allowlist from a comma-separated list of CIDR blocks, addresses and host names
    /// (`127.0.0.1/32,fd00::/8,hooks.internal`); an empty text allows nothing.
    pub fn parse(text: &str) -> Result<Allowlist, String> {
        let mut allow = Allowlist::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry.starts_with(|c: char| c.is_ascii_digit()) || entry.contains(':') {
                allow.blocks.push(entry.parse()?);
            } else if is_host_name(entry) {
                allow.hosts.push(normal_host(entry));
            } else {
                return Err(format!(
                    "{entry:?} is neither a host name, an IP address nor a CIDR block"
                ));
            }
        }
        Ok(allow)
    }

    /// Whether the host name `host` is allowed by name.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normal_host(host);
        self.hosts.contains(&host)
    }

    /// Whether `ip` lies in an allowed block.
    pub fn allows_addr(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.blocks.iter().any(|b| b.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.hosts.is_empty()
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .blocks
            .iter()
            .map(Cidr::to_string)
            .chain(self.hosts.iter().cloned())
            .collect();
        f.write_str(&entries.join(","))
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The kind of address a request is refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    /// Including 169.254.169.254, the cloud metadata endpoint.
    LinkLocal,
    /// RFC 1918 and the deprecated IPv6 site-local block.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
    SharedNat,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// 0.0.0.0/8 and `::`, which reach the local host on many systems.
    Unspecified,
    Multicast,
    Broadcast,
    /// Blocks IANA reserves (240.0.0.0/4, 192.0.0.0/24, benchmarking 198.18.0.0/15).
    Reserved,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Private => "private",
            AddressClass::SharedNat => "shared (carrier-grade NAT)",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// Why a URL or an address may not be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is not an http:// or https:// URL")]
    Scheme,
    #[error("is not a URL with a host")]
    NoHost,
    #[error("resolves to {} {} address {addr}", article(*class), class.as_str())]
    Address { addr: IpAddr, class: AddressClass },
}

/// The indefinite article before a class's name ("a unique-local", "an unspecified").
fn article(class: AddressClass) -> &'static str {
    match class {
        AddressClass::Unspecified => "an",
        _ => "a",
    }
}

/// An address in the form it is judged in: an IPv6 address that embeds an IPv4 one (mapped
/// `::ffff:a.b.c.d`, the deprecated compatible `::a.b.c.d`, NAT64's `64:ff9b::a.b.c.d`)
/// becomes that IPv4 address, since that is where the packets go.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded = Ipv4Addr::from(u128::from(v6) as u32);
    match s {
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => ip,
        [0, 0, 0, 0, 0, 0, _, _] => IpAddr::V4(embedded),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => IpAddr::V4(embedded),
        _ => ip,
    }
}

/// The refused class `ip` belongs to, if any (pure; no allowlist).
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => AddressClass::Loopback,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        _ if a == 0 => AddressClass::Unspecified,
        _ if ip.is_link_local() => AddressClass::LinkLocal,
        _ if ip.is_private() => AddressClass::Private,
        _ if a == 100 && (64..128).contains(&b) => AddressClass::SharedNat,
        _ if ip.is_multicast() => AddressClass::Multicast,
        _ if a >= 240 => AddressClass::Reserved,
        _ if a == 192 && b == 0 && c == 0 => AddressClass::Reserved,
        _ if a == 198 && (b == 18 || b == 19) => AddressClass::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => AddressClass::Loopback,
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_multicast() => AddressClass::Multicast,
        _ if ip.is_unicast_link_local() => AddressClass::LinkLocal,
        _ if ip.is_unique_local() => AddressClass::UniqueLocal,
        // fec0::/10, site-local: deprecated, still routed privately where it is used.
        _ if first & 0xffc0 == 0xfec0 => AddressClass::Private,
        _ => return None,
    })
}

/// The decision for one address: allowed when the operator's allowlist holds it or when it
/// is in none of the refused classes.
pub fn allowed(ip: IpAddr, allow: &Allowlist) -> Result<(), Refusal> {
    if allow.allows_addr(ip) {
        return Ok(());
    }
    match classify(ip) {
        None => Ok(()),
        Some(class) => Err(Refusal::Address {
            addr: canonical(ip),
            class,
        }),
    }
}

/// The addresses a request to `host` may dial among those it resolved to: all of them when
/// the host is allowed by name, else the allowed ones; none allowed is the first refusal.
pub fn permitted(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    allow: &Allowlist,
) -> Result<Vec<SocketAddr>, Refusal> {
    let by_name = allow.allows_host(host);
    let mut kept = Vec::new();
    let mut refusal = None;
    for addr in addrs {
        let decision = match by_name {
            true => Ok(()),
            false => allowed(addr.ip(), allow),
        };
        match decision {
            Ok(()) => kept.push(addr),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    match (kept.is_empty(), refusal) {
        (true, Some(refusal)) => Err(refusal),
        _ => Ok(kept),
    }
}

/// A URL's host: a name to resolve or an address written in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    Name(&'a str),
    Addr(IpAddr),
}

/// The host of `url`. The URL parser has already turned every way of writing an IPv4 address
/// (`0x7f.1`, `2130706433`, ...) into the dotted form, so a host that is not an address here
/// is a name.
pub fn host(url: &Url) -> Option<Host<'_>> {
    let text = url.host_str().filter(|h| !h.is_empty())?;
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Addr(ip),
        Err(_) => Host::Name(text),
    })
}

/// The URL's scheme and, when its host is an address, that address (pure): the check made
/// before every send, where names are left to [`GuardedResolver`].
pub fn check_literal(url: &Url, allow: &Allowlist) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme);
    }
    match host(url) {
        None => Err(Refusal::NoHost),
        Some(Host::Name(_)) => Ok(()),
        Some(Host::Addr(ip)) => allowed(ip, allow),
    }
}

/// Parses `text` as a URL and checks it where it is given: the scheme, the address in it, or
/// every address its host resolves to now. A host that does not resolve (yet) is let through:
/// the send-time resolver decides then.
pub async fn check(text: &str, allow: &Allowlist) -> Result<Url, Refusal> {
    let url = Url::parse(text).map_err(|_| Refusal::NoHost)?;
    check_literal(&url, allow)?;
    let name = match host(&url) {
        Some(Host::Name(name)) if !allow.allows_host(name) => name.to_string(),
        _ => return Ok(url),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let lookup = tokio::time::timeout(
        LOOKUP_TIMEOUT,
        tokio::net::lookup_host((name.as_str(), port)),
    )
    .await;
    if let Ok(Ok(addrs)) = lookup {
        for addr in addrs {
            allowed(addr.ip(), allow)?;
        }
    }
    Ok(url)
}

/// The HTTP client's resolver: the system's, with every refused address dropped, so a
/// request never dials one whatever the name resolves to when it is sent.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: Arc<Allowlist>,
}

impl GuardedResolver {
    pub fn new(allow: Arc<Allowlist>) -> GuardedResolver {
        GuardedResolver { allow }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = permitted(&host, addrs, &allow)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a request's error is the guard's refusal (somewhere in its chain of causes).
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(refusal) = error.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        next = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refused_and_allowed_addresses() {
        use AddressClass::*;
        let none = Allowlist::default();
        let table: &[(&str, Option<AddressClass>)] = &[
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("169.254.169.254", Some(LinkLocal)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("10.0.0.1", Some(Private)),
            ("172.16.5.4", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("fec0::1", Some(Private)),
            ("100.64.0.1", Some(SharedNat)),
            ("100.127.255.254", Some(SharedNat)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("224.0.0.1", Some(Multicast)),
            ("239.1.1.1", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            // Public addresses, including the neighbours of refused blocks.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("169.255.0.1", None),
            ("11.0.0.1", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
        ];
        for (text, class) in table {
            let result = allowed(ip(text), &none);
            match class {
                None => assert_eq!(result, Ok(()), "{text}"),
                Some(class) => match result {
                    Err(Refusal::Address { class: got, .. }) => {
                        assert_eq!(got, *class, "{text}")
                    }
                    other => panic!("{text}: {other:?}"),
                },
            }
        }
    }

    #[test]
    fn the_allowlist_opens_blocks_and_hosts_on_purpose() {
        let allow =
            Allowlist::parse(" 127.0.0.1/32, 10.1.0.0/16 ,fd00::/8,Hooks.Internal.").unwrap();
        assert_eq!(allowed(ip("127.0.0.1"), &allow), Ok(()));
        assert_eq!(allowed(ip("::ffff:127.0.0.1"), &allow), Ok(()));
        assert!(allowed(ip("127.0.0.2"), &allow).is_err());
        assert_eq!(allowed(ip("10.1.200.3"), &allow), Ok(()));
        assert!(allowed(ip("10.2.0.1"), &allow).is_err());
        assert_eq!(allowed(ip("fd00::5"), &allow), Ok(()));
        assert!(allowed(ip("fc00::5"), &allow).is_err());
        assert!(allow.allows_host("hooks.internal"));
        assert!(!allow.allows_host("other.internal"));
        assert_eq!(
            allow.to_string(),
            "127.0.0.1/32,10.1.0.0/16,fd00::/8,hooks.internal"
        );
        assert_eq!(Allowlist::parse("").unwrap(), Allowlist::default());
        for bad in ["10.0.0.0/33", "::/129", "http://x", "a b", "1.2.3"] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_message_says_why() {
        let refusal = allowed(ip("127.0.0.1"), &Allowlist::default()).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "resolves to a loopback address 127.0.0.1"
        );
        let refusal = allowed(ip("fd00::1"), &Allowlist::default()).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "resolves to a unique-local address fd00::1"
        );
    }

    #[test]
    fn urls_are_checked_by_scheme_and_written_address() {
        let none = Allowlist::default();
        let url = |t: &str| Url::parse(t).unwrap();
        assert_eq!(
            check_literal(&url("ftp://example.com/"), &none),
            Err(Refusal::Scheme)
        );
        assert_eq!(check_literal(&url("https://example.com/x"), &none), Ok(()));
        // The URL parser normalizes the address forms a resolver would accept.
        for text in [
            "http://127.0.0.1:9/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]:80/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0/",
        ] {
            assert!(
                matches!(
                    check_literal(&url(text), &none),
                    Err(Refusal::Address { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let none = Allowlist::default();
        let a = |t: &str| SocketAddr::new(ip(t), 443);
        assert_eq!(
            permitted("mixed.example", [a("10.0.0.1"), a("93.184.216.34")], &none),
            Ok(vec![a("93.184.216.34")])
        );
        assert!(matches!(
            permitted("rebound.example", [a("127.0.0.1"), a("::1")], &none),
            Err(Refusal::Address {
                class: AddressClass::Loopback,
                ..
            })
        ));
        let allow = Allowlist::parse("rebound.example").unwrap();
        assert_eq!(
            permitted("Rebound.Example", [a("127.0.0.1")], &allow),
            Ok(vec![a("127.0.0.1")])
        );
        assert_eq!(permitted("nothing.example", [], &none), Ok(vec![]));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_where_it_is_given() {
        let none = Allowlist::default();
        let refusal = check("http://localhost:1/hook", &none).await.unwrap_err();
        assert!(
            matches!(
                refusal,
                Refusal::Address {
                    class: AddressClass::Loopback,
                    ..
                }
            ),
            "{refusal}"
        );
        let allow = Allowlist::parse("localhost").unwrap();
        assert!(check("http://localhost:1/hook", &allow).await.is_ok());
        assert_eq!(
            check("gopher://localhost/", &allow).await.unwrap_err(),
            Refusal::Scheme
        );
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve as _;
        let resolver = GuardedResolver::new(Arc::new(Allowlist::default()));
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        assert!(refusal_in(error.as_ref()).is_some(), "{error}");
        let resolver = GuardedResolver::new(Arc::new(Allowlist::parse("127.0.0.1").unwrap()));
        let addrs: Vec<_> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip() == ip("127.0.0.1")), "{addrs:?}");
    }
}
