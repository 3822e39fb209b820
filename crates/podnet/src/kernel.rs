//! The kernel's side, over netlink (rtnetlink): the vxlan device, routes
//! to other nodes' pod ranges, and the vxlan device's neighbour (ARP) and
//! forwarding (FDB) entries. Every write is a replace, so applying the
//! same state twice is harmless; deletes of what is already gone succeed.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};
use skiff_api::cidr::Cidr;

use crate::Error;

/// The protocol number skiff's routes carry (`ip route show proto 83`):
/// how a restarted agent tells its own routes from everyone else's.
pub const ROUTE_PROTOCOL: u8 = 83;

/// errno values the kernel answers with for what is already gone.
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// A network device.
#[derive(Debug, Clone)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The MTU.
    pub mtu: u32,
    /// The MAC address (Ethernet devices).
    pub mac: Option<[u8; 6]>,
}

/// One route of ours, as found in the kernel.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its destination.
    pub dst: Cidr,
    /// Its next hop.
    pub gateway: Option<Ipv4Addr>,
    /// Its output device.
    pub oif: Option<u32>,
    message: RouteMessage,
}

/// A netlink connection (its task ends when the last handle is dropped).
#[derive(Clone)]
pub struct Kernel {
    handle: rtnetlink::Handle,
}

fn gone(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.is_some_and(|c| matches!(-c.get(), ENOENT | ESRCH | ENODEV)))
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link { index: m.header.index, name: String::new(), mtu: 0, mac: None };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(mtu) => l.mtu = *mtu,
            LinkAttribute::Address(mac) => l.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            _ => {}
        }
    }
    l
}

/// The vxlan settings of a link message, when it is a vxlan device.
fn vxlan_info(m: &LinkMessage) -> Option<&[InfoVxlan]> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

fn is_vxlan(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))))
}

impl Kernel {
    /// Opens a netlink connection in this process's network namespace.
    pub fn connect() -> Result<Self, Error> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Io)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>, Error> {
        match self.handle.link().get().match_name(name.to_string()).execute().try_next().await {
            Ok(m) => Ok(m),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The device named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        Ok(self.link_message(name).await?.as_ref().map(link_of))
    }

    /// The device that holds `ip`.
    pub async fn link_with_address(&self, ip: Ipv4Addr) -> Result<Link, Error> {
        let addrs: Vec<_> = self.handle.address().get().set_address_filter(IpAddr::V4(ip)).execute().try_collect().await?;
        let index = addrs.first().map(|a| a.header.index).ok_or(Error::NoDevice(ip))?;
        let m = self.handle.link().get().match_index(index).execute().try_next().await?.ok_or(Error::NoDevice(ip))?;
        Ok(link_of(&m))
    }

    /// Makes `name` a vxlan device with these settings (a device of that
    /// name with others is replaced), up, with `mtu`. Returns it.
    pub async fn ensure_vxlan(&self, name: &str, vni: u32, port: u16, local: Ipv4Addr, underlay: &Link, mtu: u32) -> Result<Link, Error> {
        if let Some(m) = self.link_message(name).await? {
            let same = is_vxlan(&m)
                && vxlan_info(&m).is_some_and(|info| {
                    info.contains(&InfoVxlan::Id(vni))
                        && info.contains(&InfoVxlan::Port(port))
                        && info.contains(&InfoVxlan::Local(local))
                        && info.contains(&InfoVxlan::Link(underlay.index))
                });
            if !same {
                tracing::info!(device = name, "replacing a device whose vxlan settings differ");
                self.handle.link().del(m.header.index).execute().await?;
            }
        }
        if self.link_message(name).await?.is_none() {
            let msg = LinkVxlan::new(name, vni)
                .dev(underlay.index)
                .local(local)
                .port(port)
                .learning(false)
                .append_info_data(InfoVxlan::UDPCsum(false))
                .mtu(mtu)
                .build();
            self.handle.link().add(msg).execute().await?;
        }
        let m = self.link_message(name).await?.ok_or_else(|| Error::Vanished(name.to_string()))?;
        self.handle.link().set(LinkUnspec::new_with_index(m.header.index).mtu(mtu).up().build()).execute().await?;
        Ok(link_of(&m))
    }

    /// Leaves `ip/32` the only IPv4 address of device `index`.
    pub async fn set_only_address(&self, index: u32, ip: Ipv4Addr) -> Result<(), Error> {
        let addrs: Vec<_> = self.handle.address().get().set_link_index_filter(index).execute().try_collect().await?;
        let mut present = false;
        for a in addrs.into_iter().filter(|a| a.header.family == AddressFamily::Inet) {
            let mine = a.header.prefix_len == 32
                && a.attributes.iter().any(|at| matches!(at, rtnetlink::packet_route::address::AddressAttribute::Local(IpAddr::V4(l)) if *l == ip));
            if mine {
                present = true;
            } else {
                self.handle.address().del(a).execute().await?;
            }
        }
        if !present {
            self.handle.address().add(index, IpAddr::V4(ip), 32).replace().execute().await?;
        }
        Ok(())
    }

    /// Deletes device `name` (no error when it is gone).
    pub async fn delete_link(&self, name: &str) -> Result<(), Error> {
        if let Some(m) = self.link_message(name).await? {
            match self.handle.link().del(m.header.index).execute().await {
                Err(e) if !gone(&e) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Routes `dst` via `gateway` out of device `oif`; `onlink`: the
    /// gateway is reachable on the device whatever its addresses say (the
    /// vxlan device's peers).
    pub async fn replace_route(&self, dst: Cidr, gateway: Ipv4Addr, oif: u32, onlink: bool) -> Result<(), Error> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.base, dst.prefix)
            .gateway(gateway)
            .output_interface(oif)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if onlink {
            b = b.onlink();
        }
        self.handle.route().add(b.build()).replace().execute().await?;
        Ok(())
    }

    /// skiff's routes in the main table (whose destinations lie in
    /// `within`, when given).
    pub async fn routes(&self, within: Option<Cidr>) -> Result<Vec<Route>, Error> {
        let all: Vec<RouteMessage> = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute().try_collect().await?;
        Ok(all
            .into_iter()
            .filter(|m| m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) && m.header.table == RouteHeader::RT_TABLE_MAIN)
            .filter_map(|m| {
                let mut dst = None;
                let (mut gateway, mut oif) = (None, None);
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                let dst = format!("{}/{}", dst?, m.header.destination_prefix_length).parse::<Cidr>().ok()?;
                within.is_none_or(|w| w.contains(dst.base)).then_some(Route { dst, gateway, oif, message: m })
            })
            .collect())
    }

    /// Deletes a route found by [`Kernel::routes`].
    pub async fn delete_route(&self, r: &Route) -> Result<(), Error> {
        match self.handle.route().del(r.message.clone()).execute().await {
            Err(e) if !gone(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// A permanent ARP entry on device `index`: `ip` is at `mac`.
    pub async fn replace_neighbour(&self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), Error> {
        self.handle.neighbours().add(index, IpAddr::V4(ip)).link_layer_address(&mac).replace().execute().await?;
        Ok(())
    }

    /// A permanent forwarding entry on vxlan device `index`: frames for
    /// `mac` are tunnelled to `dst`.
    pub async fn replace_fdb(&self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), Error> {
        self.handle.neighbours().add_bridge(index, &mac).flags(NeighbourFlags::Own).destination(IpAddr::V4(dst)).replace().execute().await?;
        Ok(())
    }

    /// The permanent ARP entries (`AddressFamily::Inet`) or forwarding
    /// entries (`AddressFamily::Bridge`) of device `index`, as
    /// (address, MAC, the entry to delete).
    pub async fn entries(&self, index: u32, family: AddressFamily) -> Result<Vec<(Option<Ipv4Addr>, Option<[u8; 6]>, NeighbourMessage)>, Error> {
        let all: Vec<NeighbourMessage> = self.handle.neighbours().get().set_address_family(family).execute().try_collect().await?;
        Ok(all
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .map(|m| {
                let (mut ip, mut mac) = (None, None);
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
                        NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
                        _ => {}
                    }
                }
                (ip, mac, m)
            })
            .collect())
    }

    /// Deletes an entry found by [`Kernel::entries`].
    pub async fn delete_entry(&self, m: NeighbourMessage) -> Result<(), Error> {
        match self.handle.neighbours().del(m).execute().await {
            Err(e) if !gone(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }
}
