//! `sidelb-injector` end to end, registered as a mutating webhook.

mod kubectl;
