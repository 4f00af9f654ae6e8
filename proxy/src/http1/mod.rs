//! The HTTP/1.1 message codec: request heads read strictly, and bodies by
//! their framing.
//!
//! Both sides of an HTTP/1.1 exchange use it: the listener reads the app's
//! requests with it, and the forwarder hands the same head and body on to
//! the endpoint. It sits below both, so neither imports the other.

pub mod body;
pub mod head;
