//! The network: the sans-IO link emulator, the frame codec and the streams that send it
//! (`sender`: at once, or under Nagle's algorithm), quinn's socket drivers and endpoint
//! configuration.

pub mod congestion;
pub mod endpoint;
pub mod fault;
pub mod framed;
pub mod link;
pub mod params;
pub mod port;
pub mod sender;
pub mod socket;
pub mod transport;
pub mod wire;
