//! dpkg maintainer-script and rpm scriptlet entry points. OWNER: packaging helper.
