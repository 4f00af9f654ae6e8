//! Free loopback ports for processes that must be told their port up front.
//!
//! The port is found by binding port 0 and closing the socket again, so
//! another process could take it in between; the kernel hands out ephemeral
//! ports in sequence, which makes that rare on a test machine. Processes that
//! can report their own port (the test backend) bind port 0 themselves.

use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// An address on 127.0.0.1 whose port was free a moment ago.
pub fn free_local_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 for a free port")?;
    Ok(listener.local_addr()?)
}
