# The deployment's NATS PKI: one certificate authority, and per NATS server a private
# key and a certificate signed by it that names every host the server is dialled at.
# The tls_* resources are all in tls.tf; this file only works out the names.

locals {
  # A name that is an address (IPv4 digits and dots, or anything with a colon) goes in
  # ip_addresses, any other in dns_names. Wildcard bind addresses are nobody's name.
  is_ip    = "^[0-9.]+$|:"
  wildcard = ["", "0.0.0.0", "::"]

  # Every name a server is dialled at: its advertise_host (the host of every route,
  # gateway, client and monitoring URL edgemesh builds, and what the server advertises),
  # its bind host unless that is a wildcard, and, when nats_addresses has its region, its
  # Elastic IP and that address's AWS DNS name (the CNAME target of advertise_host).
  hosts = merge([
    for r in var.topology.regions : {
      for i, s in r.nats : s.name => distinct([
        for h in concat(
          [s.advertise_host == null ? "" : s.advertise_host, s.host],
          contains(keys(var.nats_addresses), r.name) ? [var.nats_addresses[r.name].public_dns[i], var.nats_addresses[r.name].public_ips[i]] : [],
        ) : h if !contains(local.wildcard, h)
      ])
    }
  ]...)

  servers = {
    for name, hosts in local.hosts : name => {
      dns_names    = [for h in hosts : h if length(regexall(local.is_ip, h)) == 0]
      ip_addresses = [for h in hosts : h if length(regexall(local.is_ip, h)) > 0]
    }
  }
}
