variable "topology" {
  description = "The deployment's shared topology (mesh/topology.py; in HCL or jsondecode of the topology JSON), identical in every region. Nodes get jsonencode(topology). With tls (null: plain text), nodes fetch the NATS TLS files to its paths."
  type = object({
    regions = list(object({
      name      = string
      latitude  = number
      longitude = number
      nats = list(object({
        name           = string
        host           = string
        advertise_host = string
        client_port    = number
        cluster_port   = number
        gateway_port   = number
        monitor_port   = number
      }))
      edges = list(object({
        name      = string
        url       = string
        bind_host = string
      }))
      control_plane = object({
        url                = string
        bind_host          = string
        dns_host           = string
        dns_port           = number
        dns_public_address = string
      })
      public_addresses = list(string)
    }))
    dns = object({
      zone           = string
      ttl_s          = number
      default_region = string
    })
    tls = object({
      ca_file   = string
      cert_file = string
      key_file  = string
    })
  })

  validation {
    condition     = length(var.topology.regions) > 0
    error_message = "The topology must have at least one region."
  }

  validation {
    condition     = var.topology.tls == null ? true : alltrue([for p in [var.topology.tls.ca_file, var.topology.tls.cert_file, var.topology.tls.key_file] : can(regex("^/[A-Za-z0-9_./-]+$", p))])
    error_message = "The topology's tls must be null or absolute paths of A-Z a-z 0-9 _ . - / (they are written into the nodes' scripts)."
  }
}

variable "region" {
  description = "Name of the region (as in the topology) whose nodes these cloud-init documents configure."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.region))
    error_message = "The region must be 1-32 of a-z 0-9 -, start with a letter and not end with '-'."
  }
}

variable "edgemesh_version" {
  description = "The edgemesh release every node installs from PyPI (pip install edgemesh==VERSION)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)*((a|b|rc)[0-9]+)?(\\.post[0-9]+)?(\\.dev[0-9]+)?$", var.edgemesh_version))
    error_message = "The edgemesh_version must be an exact release such as 0.1.0 or 1.2.0rc1."
  }
}

variable "secrets_parameter_names" {
  description = "Per role, the name of the SSM SecureString parameter that holds that role's secrets JSON (mesh/secrets.py, only the fields the role needs): edge, control_plane, nats. Each node fetches its role's parameter to /etc/edgemesh/secrets.json at every service start, so no secret appears in user data."
  type = object({
    edge          = string
    control_plane = string
    nats          = string
  })

  validation {
    condition     = alltrue([for n in values(var.secrets_parameter_names) : can(regex("^/[A-Za-z0-9_./-]{1,1000}$", n))])
    error_message = "Every secrets parameter name must be an absolute SSM parameter path of A-Z a-z 0-9 _ . - /."
  }
}

variable "nats_store_dir" {
  description = "JetStream store directory on the NATS nodes (passed to `edgemesh nats-config --store-dir`)."
  type        = string
  default     = "/var/lib/edgemesh/nats"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.nats_store_dir))
    error_message = "The nats_store_dir must be an absolute path of A-Z a-z 0-9 _ . - /."
  }
}

variable "geoip_db_s3_uri" {
  description = "S3 URI (s3://BUCKET/KEY.mmdb) of a MaxMind City database the operator supplies (MaxMind's licence forbids shipping one). The control plane fetches it to geoip_db_path before every start and runs with --geoip-db; null: no database, and geo-DNS sends every client to the topology's default region."
  type        = string
  default     = null

  validation {
    condition     = var.geoip_db_s3_uri == null ? true : can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9_./+-]*\\.mmdb$", var.geoip_db_s3_uri))
    error_message = "The geoip_db_s3_uri must be null or s3://BUCKET/KEY.mmdb: a MaxMind City database (GeoLite2-City.mmdb or GeoIP2-City.mmdb, extracted from MaxMind's .tar.gz) in an S3 bucket."
  }
}

variable "tls_ca_parameter_name" {
  description = "Name of the SSM parameter holding the NATS CA certificate (PEM), which every node fetches to the topology's tls.ca_file before every start. Required when the topology has tls."
  type        = string
  default     = null

  validation {
    condition     = var.tls_ca_parameter_name == null ? true : can(regex("^/[A-Za-z0-9_./-]{1,1000}$", var.tls_ca_parameter_name))
    error_message = "The tls_ca_parameter_name must be null or an absolute SSM parameter path of A-Z a-z 0-9 _ . - /."
  }
}

variable "nats_tls_parameter_names" {
  description = "Per NATS server of the region, in topology order: the SSM parameters holding its certificate (cert) and its private key (key, a SecureString), which the server fetches to the topology's tls.cert_file and tls.key_file (mode 0600, owned by edgemesh) before every start. Required when the topology has tls."
  type = list(object({
    cert = string
    key  = string
  }))
  default = []

  validation {
    condition     = alltrue([for p in var.nats_tls_parameter_names : can(regex("^/[A-Za-z0-9_./-]{1,1000}$", p.cert)) && can(regex("^/[A-Za-z0-9_./-]{1,1000}$", p.key))])
    error_message = "Every NATS TLS parameter name must be an absolute SSM parameter path of A-Z a-z 0-9 _ . - /."
  }
}
