################################################################################
# Keys and certificates (hashicorp/tls). Private keys live in Terraform state only:
# keep state in an encrypted backend. The rest of the module reads nothing from here
# but the three locals at the end.
################################################################################

# One CA for the whole deployment: every node verifies every NATS server with it, and
# servers verify each other (routes, gateways) with it.
resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  set_subject_key_id    = true
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["cert_signing", "crl_signing"]

  subject {
    common_name  = "${var.name} NATS CA"
    organization = "edgemesh"
  }
}

# Per NATS server: its key (kept across renewals), and a certificate good for both ends
# of a connection: it serves clients and monitoring, and shows it when dialling other
# servers for routes and gateways (mutual TLS).
resource "tls_private_key" "nats" {
  for_each = local.servers

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "nats" {
  for_each = local.servers

  private_key_pem = tls_private_key.nats[each.key].private_key_pem
  dns_names       = each.value.dns_names
  ip_addresses    = each.value.ip_addresses

  subject {
    common_name  = each.key
    organization = "edgemesh"
  }
}

# Re-issued by `terraform apply` once within early_renewal_hours of its end (the plan
# shows the replacement); the servers pick it up on `systemctl reload edgemesh`.
resource "tls_locally_signed_cert" "nats" {
  for_each = local.servers

  cert_request_pem      = tls_cert_request.nats[each.key].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = var.server_validity_hours
  early_renewal_hours   = var.server_early_renewal_hours
  set_subject_key_id    = true
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
}

locals {
  ca_cert_pem      = tls_self_signed_cert.ca.cert_pem
  server_cert_pems = { for name, c in tls_locally_signed_cert.nats : name => c.cert_pem }
  server_key_pems  = { for name, k in tls_private_key.nats : name => k.private_key_pem }
}
