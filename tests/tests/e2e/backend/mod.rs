//! The test backends and the Python client on their own, so that proxy
//! scenarios can rely on what they count and answer.

mod calls;
mod lifecycle;
mod python_client;
