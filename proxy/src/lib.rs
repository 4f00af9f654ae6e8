//! sidelb-proxy.
