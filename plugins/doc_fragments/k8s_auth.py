# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The options, aliases, types and K8S_AUTH_* variables are those of kubernetes.core's
# k8s_auth_options fragment, so playbooks and module_defaults written for kubernetes.core work unchanged.
# Paired with AUTH_ARG_SPEC in plugins/module_utils/_auth.py: change both together.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  host:
    description:
      - Provide a URL for accessing the API.
      - Can also be specified via E(K8S_AUTH_HOST) environment variable.
    type: str
  api_key:
    description:
      - Token used to authenticate with the API.
      - Can also be specified via E(K8S_AUTH_API_KEY) environment variable.
    type: str
  kubeconfig:
    description:
      - Path to an existing Kubernetes config file. If not provided, and no other connection options are provided,
        the in-cluster configuration is tried first and then the default configuration file C(~/.kube/config)
        (the same order as kubernetes.core).
      - Can also be specified via E(K8S_AUTH_KUBECONFIG) environment variable.
      - The Kubernetes configuration can also be provided as a dictionary. Its secrets (C(token), C(password),
        C(client-key-data) and other key data, the C(auth-provider) C(config) values, the C(exec) C(env) values, and
        any key named like a token, secret or password) are masked in every result and message; paths, server
        URLs and names stay visible.
      - A path that does not exist, or a file that is not a YAML mapping, fails with one line naming the path.
    type: raw
  context:
    description:
      - The name of a context found in the config file.
      - Can also be specified via E(K8S_AUTH_CONTEXT) environment variable.
    type: str
  username:
    description:
      - Provide a username for authenticating with the API.
      - Can also be specified via E(K8S_AUTH_USERNAME) environment variable.
      - Only works with clusters configured to use HTTP Basic Auth.
    type: str
  password:
    description:
      - Provide a password for authenticating with the API.
      - Can also be specified via E(K8S_AUTH_PASSWORD) environment variable.
      - Please read the description of the O(username) option for a discussion of when this option is applicable.
    type: str
  client_cert:
    description:
      - Path to a certificate used to authenticate with the API.
      - Can also be specified via E(K8S_AUTH_CERT_FILE) environment variable.
    type: path
    aliases: [ cert_file ]
  client_key:
    description:
      - Path to a key file used to authenticate with the API.
      - Can also be specified via E(K8S_AUTH_KEY_FILE) environment variable.
    type: path
    aliases: [ key_file ]
  ca_cert:
    description:
      - Path to a CA certificate used to authenticate with the API. The full certificate chain must be provided to
        avoid certificate validation errors.
      - Can also be specified via E(K8S_AUTH_SSL_CA_CERT) environment variable.
    type: path
    aliases: [ ssl_ca_cert ]
  validate_certs:
    description:
      - Whether or not to verify the API server's SSL certificates.
      - Can also be specified via E(K8S_AUTH_VERIFY_SSL) environment variable.
    type: bool
    aliases: [ verify_ssl ]
  proxy:
    description:
      - The URL of an HTTP proxy to use for the connection.
      - Can also be specified via E(K8S_AUTH_PROXY) environment variable.
      - Please note that this module does not pick up typical proxy settings from the environment (for example
        E(HTTP_PROXY)).
    type: str
  no_proxy:
    description:
      - The comma separated list of hosts/domains/IP/CIDR that should not go through the proxy.
      - Can also be specified via E(K8S_AUTH_NO_PROXY) environment variable.
      - Please note that this module does not pick up typical proxy settings from the environment (for example
        E(NO_PROXY)).
      - Example value is V(localhost,.local,.example.com,127.0.0.1,127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16).
    type: str
  proxy_headers:
    description:
      - The Header used for the HTTP proxy.
    type: dict
    suboptions:
      proxy_basic_auth:
        type: str
        description:
          - Colon-separated username:password for proxy basic authentication header.
          - Can also be specified via E(K8S_AUTH_PROXY_HEADERS_PROXY_BASIC_AUTH) environment variable.
      basic_auth:
        type: str
        description:
          - Colon-separated username:password for basic authentication header.
          - Can also be specified via E(K8S_AUTH_PROXY_HEADERS_BASIC_AUTH) environment variable.
      user_agent:
        type: str
        description:
          - String representing the user-agent you want, such as foo/1.0.
          - Can also be specified via E(K8S_AUTH_PROXY_HEADERS_USER_AGENT) environment variable.
  persist_config:
    description:
      - Whether or not to save the kube config refresh tokens.
      - Can also be specified via E(K8S_AUTH_PERSIST_CONFIG) environment variable.
      - When the context uses credentials with refresh tokens (like oidc or gke/gcloud auth), the token is refreshed
        by the Kubernetes Python client but not saved by default; setting this to true saves the new refresh token
        to the kube config file.
      - Disabled by default.
    type: bool
  impersonate_user:
    description:
      - Username to impersonate for the operation.
      - Can also be specified via E(K8S_AUTH_IMPERSONATE_USER) environment variable.
    type: str
  impersonate_groups:
    description:
      - Group(s) to impersonate for the operation.
      - Can also be specified via E(K8S_AUTH_IMPERSONATE_GROUPS) environment variable, for example V(Group1,Group2).
    type: list
    elements: str
notes:
  - To avoid SSL certificate validation errors when O(validate_certs=true), the full certificate chain for the API
    server must be provided via O(ca_cert) or in the O(kubeconfig) file.
requirements:
  - kubernetes (the Python client) >= 24.2.0
"""
