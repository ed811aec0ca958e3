;;; flashls-lsp.el --- flashls's ghost text over lsp-mode  -*- lexical-binding: t; -*-

;; Copyright (c) 2026 the flashls authors
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; The lsp-mode side of flashls.el, loaded by `flashls-lsp-register'.  flashls
;; is an add-on client (server id `flashls'), so it runs beside the language's
;; own server; its requests and notifications go to its workspace alone.
;;
;; lsp-mode 8 appends a client's custom capabilities at the top level, where a
;; second `textDocument' key is dropped when serialized, so the server cannot
;; learn that ghost text is shown; it is told instead not to offer completion
;; items (`completion_fallback' never), which would show each suggestion twice.

;;; Code:

(require 'cl-lib)
(require 'lsp-mode)
(require 'flashls)

(defun flashls-lsp--workspace ()
  "The initialized lsp-mode workspace of flashls here, or nil."
  (when (bound-and-true-p lsp-mode)
    (cl-find-if (lambda (workspace)
                  (and (eq (lsp--workspace-server-id workspace) 'flashls)
                       (eq (lsp--workspace-status workspace) 'initialized)))
                (lsp-workspaces))))

(cl-defmethod flashls--manages-p ((_backend (eql 'lsp-mode)))
  "Whether flashls is among lsp-mode's servers here."
  (and (flashls-lsp--workspace) t))

(cl-defmethod flashls--position-params ((_backend (eql 'lsp-mode)))
  "lsp-mode's TextDocumentPositionParams of point."
  (lsp--text-document-position-params))

(cl-defmethod flashls--send-request ((_backend (eql 'lsp-mode)) params on-answer)
  "Send PARAMS as `textDocument/inlineCompletion' to flashls alone.
ON-ANSWER gets the result.  Returns the cancel token, one per buffer."
  (with-lsp-workspace (flashls-lsp--workspace)
    (let ((token (list 'flashls (current-buffer))))
      (lsp--flush-delayed-changes)      ; a full-sync server's debounced edits
      (lsp-request-async "textDocument/inlineCompletion" params on-answer
                         :mode 'detached :cancel-token token
                         :error-handler #'ignore)
      token)))

(cl-defmethod flashls--cancel-request ((_backend (eql 'lsp-mode)) token)
  "Cancel the request of TOKEN; lsp-mode sends `$/cancelRequest'."
  (lsp-cancel-request-by-token token))

(cl-defmethod flashls--send-notification ((_backend (eql 'lsp-mode))
                                          method params)
  "Send flashls's workspace the notification METHOD with PARAMS."
  (with-lsp-workspace (flashls-lsp--workspace)
    (lsp-notify method params)))

(defun flashls-lsp--handlers ()
  "lsp-mode handlers of flashls's own notifications."
  (let ((handlers (make-hash-table :test #'equal)))
    (puthash "flashls/suggestionFinished"
             (lambda (_workspace params)
               (flashls--suggestion-finished
                (flashls--get (flashls--get params "textDocument") "uri")
                (flashls--get params "position")))
             handlers)
    (puthash "flashls/status"
             (lambda (_workspace params) (flashls--status params))
             handlers)
    handlers))

(defun flashls-lsp--initialization-options ()
  "`flashls-server-settings', without completion items unless they say so."
  (flashls--settings-object
   (unless (or (plist-member flashls-server-settings :completion_fallback)
               (plist-member flashls-server-settings :completionFallback))
     (list :completion_fallback "never"))))

(defun flashls-lsp--register (command)
  "Register flashls, started with COMMAND, as an lsp-mode add-on client."
  (lsp-register-client
   (make-lsp-client
    :new-connection (lsp-stdio-connection (lambda () command))
    :major-modes (mapcar #'car flashls-languages)
    :server-id 'flashls
    :add-on? t
    :priority -1
    :initialization-options #'flashls-lsp--initialization-options
    :notification-handlers (flashls-lsp--handlers))))

(add-to-list 'flashls--backends 'lsp-mode)

(provide 'flashls-lsp)
;;; flashls-lsp.el ends here
