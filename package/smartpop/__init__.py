"""SmartPop: collects provider mail into MailPlus and relays outgoing mail (DSM 7 package)."""

# The single source of the package version. build.sh reads it into INFO; DSM requires
# "<feature>-<build>" with numeric segments, and the build number must grow every release.
__version__ = "0.1.0-0001"
