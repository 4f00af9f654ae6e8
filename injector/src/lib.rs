//! sidelb-injector.
