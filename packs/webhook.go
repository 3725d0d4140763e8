package packs

import (
	"fmt"
	"regexp"
)

// WebhookTrigger is the core trigger fired by POST /webhooks/{path}.
const WebhookTrigger = "core.webhook"

var (
	// WebhookPathPattern is what a webhook path may be: URL-safe segments
	// separated by slashes, no empty, dot or dot-dot segment.
	WebhookPathPattern = regexp.MustCompile(`^[A-Za-z0-9_~-][A-Za-z0-9_.~-]*(/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)*$`)
)

// checkWebhookParams checks a core.webhook rule's trigger_params even when
// the core pack is not the one being loaded: a malformed secret name could
// never be found in the secret store, and the webhook would refuse every
// request.
func checkWebhookParams(triggerRef string, params map[string]any) error {
	if triggerRef != WebhookTrigger {
		return nil
	}
	path, ok := params["path"].(string)
	if !ok || path == "" {
		return fmt.Errorf("core.webhook needs path, the part after /webhooks/ such as github/push")
	}
	if len(path) > 200 || !WebhookPathPattern.MatchString(path) {
		return fmt.Errorf("path %q is invalid: use letters, digits, _ - . ~ in segments separated by /, such as github/push", path)
	}
	if s, present := params["secret"]; present && s != nil {
		name, ok := s.(string)
		if !ok || !IsSecretName(name) {
			return fmt.Errorf("secret %v is not a secret name: give the NAME of attune secret set NAME (letters, digits, _ . -, starting with a letter or _)", s)
		}
	}
	return nil
}
