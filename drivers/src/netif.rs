//! Wire structures of the Xen network interface (xen/include/public/io/netif.h):
//! the tx and rx ring entries, their flags and status values.
//!
//! Everything here is plain data. The layouts are checked at compile time
//! against the sizes and offsets of the C header, and the ring sizes are
//! computed the way `__CONST_RING_SIZE` does for a 4 KiB page.

use crate::ring::{ring_entries, RingEntry};

/// A grant reference (`grant_ref_t`).
pub type GrantRef = u32;

/// The page size of every ring protocol, whatever the guest's own pages.
pub const XEN_PAGE_SIZE: usize = 4096;

/// Slots a backend must accept for one packet (`XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// Largest packet a tx request can describe (`XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xFFFF;

// ---- tx request flags (NETTXF_*) ------------------------------------------

/// Protocol checksum field is blank in the packet (hardware offload).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// Packet data has been validated against the protocol checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// Packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// Packet is followed by extra descriptor(s).
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

// ---- rx response flags (NETRXF_*) -----------------------------------------

/// Packet data has been validated against the protocol checksum.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// Protocol checksum field is blank in the packet (hardware offload).
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// Packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// Packet is followed by extra descriptor(s) (`netif_extra_info`).
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// Packet has a GSO prefix (deprecated, never negotiated by us).
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

// ---- response status (NETIF_RSP_*) ----------------------------------------

/// The backend dropped the packet.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// The backend could not process the request.
pub const NETIF_RSP_ERROR: i16 = -1;
/// Success.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Padding response for a tx extra-info slot (no request id behind it).
pub const NETIF_RSP_NULL: i16 = 1;

// ---- extra info (netif_extra_info) ----------------------------------------

/// `XEN_NETIF_EXTRA_TYPE_NONE` (never used; invalid).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// Another extra-info slot follows this one.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// `struct netif_tx_request` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxRequest {
    pub gref: GrantRef,
    /// Offset of the packet data within the granted page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Packet size in bytes (of the whole packet in the first slot).
    pub size: u16,
}

/// `struct netif_tx_response` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxResponse {
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    pub pad: u16,
    /// Reference to the page granted (read-write) for the incoming frame.
    pub gref: GrantRef,
}

/// `struct netif_rx_response` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxResponse {
    pub id: u16,
    /// Offset of the frame within the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Frame length if `>= 0`, else a `NETIF_RSP_*` error.
    pub status: i16,
}

/// The first two bytes of `struct netif_extra_info`, which overlays a ring
/// slot after a response with `NETRXF_extra_info`. We never negotiate a
/// feature that makes the backend send extras; only the chaining matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetifExtraInfoHeader {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub ty: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
}

impl NetifExtraInfoHeader {
    /// Reinterprets an rx ring slot as the head of a `netif_extra_info`
    /// (`type` and `flags` are the first two bytes of the slot, where the
    /// response's `id` lies).
    pub fn from_rx_slot(slot: &NetifRxResponse) -> Self {
        let [ty, flags] = slot.id.to_ne_bytes();
        NetifExtraInfoHeader { ty, flags }
    }

    /// Another extra-info slot follows.
    pub fn more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }
}

// SAFETY: all four are `#[repr(C)]` structs of plain integers without
// padding (sizes asserted below), so every bit pattern is a valid value.
unsafe impl RingEntry for NetifTxRequest {}
// SAFETY: as above.
unsafe impl RingEntry for NetifTxResponse {}
// SAFETY: as above.
unsafe impl RingEntry for NetifRxRequest {}
// SAFETY: as above.
unsafe impl RingEntry for NetifRxResponse {}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<NetifTxRequest>() == 12 && align_of::<NetifTxRequest>() == 4);
    assert!(offset_of!(NetifTxRequest, offset) == 4);
    assert!(offset_of!(NetifTxRequest, flags) == 6);
    assert!(offset_of!(NetifTxRequest, id) == 8);
    assert!(offset_of!(NetifTxRequest, size) == 10);
    assert!(size_of::<NetifTxResponse>() == 4);
    assert!(offset_of!(NetifTxResponse, status) == 2);
    assert!(size_of::<NetifRxRequest>() == 8 && align_of::<NetifRxRequest>() == 4);
    assert!(offset_of!(NetifRxRequest, gref) == 4);
    assert!(size_of::<NetifRxResponse>() == 8);
    assert!(offset_of!(NetifRxResponse, offset) == 2);
    assert!(offset_of!(NetifRxResponse, flags) == 4);
    assert!(offset_of!(NetifRxResponse, status) == 6);
};

/// Entries of the tx ring on one 4 KiB page: (4096 - 64) / 12 = 336,
/// rounded down to a power of two.
pub const NET_TX_RING_SIZE: usize = ring_entries::<NetifTxRequest, NetifTxResponse>(XEN_PAGE_SIZE);
/// Entries of the rx ring on one 4 KiB page: (4096 - 64) / 8 = 504,
/// rounded down to a power of two.
pub const NET_RX_RING_SIZE: usize = ring_entries::<NetifRxRequest, NetifRxResponse>(XEN_PAGE_SIZE);

const _: () = assert!(NET_TX_RING_SIZE == 256);
const _: () = assert!(NET_RX_RING_SIZE == 256);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_match_the_header_arithmetic() {
        // __CONST_RING_SIZE: __RD32((4096 - offsetof(ring)) / sizeof(entry)).
        assert_eq!((4096 - 64) / 12, 336);
        assert_eq!((4096 - 64) / 8, 504);
        assert_eq!(NET_TX_RING_SIZE, 256);
        assert_eq!(NET_RX_RING_SIZE, 256);
    }

    #[test]
    fn extra_info_header_is_the_first_two_bytes_of_the_slot() {
        let raw: [u8; 8] = [
            XEN_NETIF_EXTRA_TYPE_GSO,
            XEN_NETIF_EXTRA_FLAG_MORE,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let slot = NetifRxResponse {
            id: u16::from_ne_bytes([raw[0], raw[1]]),
            offset: 0,
            flags: 0,
            status: 0,
        };
        let h = NetifExtraInfoHeader::from_rx_slot(&slot);
        assert_eq!(h.ty, XEN_NETIF_EXTRA_TYPE_GSO);
        assert!(h.more());
    }
}
