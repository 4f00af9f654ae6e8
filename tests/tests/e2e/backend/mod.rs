//! The test backends and the apps in other languages on their own, so that proxy
//! scenarios can rely on what they count and answer.

mod apps;
mod calls;
mod lifecycle;
