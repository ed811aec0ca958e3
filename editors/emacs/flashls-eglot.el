;;; flashls-eglot.el --- flashls's ghost text over eglot  -*- lexical-binding: t; -*-

;; Copyright (c) 2026 the flashls authors
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; The eglot side of flashls.el, loaded by `flashls-eglot-register'.  The
;; flashls server it registers is a `flashls-eglot-server': it announces inline
;; completion (so the server offers no completion items, which would show each
;; suggestion twice), sends `flashls-server-settings' at start-up and handles
;; flashls's own notifications.
;;
;; eglot has no inline completion and jsonrpc's public API gives no request
;; ids, so cancelling needs the id: `jsonrpc-connection-send' hands it over.

;;; Code:

(require 'cl-lib)
(require 'eglot)
(require 'jsonrpc)
(require 'flashls)

(defconst flashls-eglot--request-timeout 120
  "Seconds before an unanswered request is forgotten.
A first answer that loads the model may take a while.")

(defvar flashls-eglot--sent-id nil
  "Bound around an inline completion request to catch its id.")

(defclass flashls-eglot-server (eglot-lsp-server) ()
  :documentation "An eglot connection to flashls.")

(cl-defmethod eglot-client-capabilities ((_server flashls-eglot-server))
  "eglot's capabilities plus inline completion, which flashls.el shows."
  (let ((capabilities (cl-call-next-method)))
    (plist-put capabilities :textDocument
               (append (plist-get capabilities :textDocument)
                       (list :inlineCompletion
                             (list :dynamicRegistration :json-false))))))

(cl-defmethod eglot-initialization-options ((_server flashls-eglot-server))
  "`flashls-server-settings', which the server reads at start-up."
  (flashls--settings-object nil))

(cl-defmethod jsonrpc-connection-send :before
  ((_server flashls-eglot-server) &key id method &allow-other-keys)
  "Keep the id of an inline completion request, to cancel it later."
  (when (eq method :textDocument/inlineCompletion)
    (setq flashls-eglot--sent-id id)))

(cl-defmethod eglot-handle-notification
  ((_server flashls-eglot-server) (_method (eql 'flashls/suggestionFinished))
   &key textDocument position &allow-other-keys)
  "Ask again where the server has finished a suggestion it cut short."
  (flashls--suggestion-finished (plist-get textDocument :uri) position))

(cl-defmethod eglot-handle-notification
  ((_server flashls-eglot-server) (_method (eql 'flashls/status)) &rest params)
  "Hand the server's status to `flashls-status-functions'."
  (flashls--status params))

(defun flashls-eglot--server ()
  "The eglot connection to flashls that manages this buffer, or nil."
  (when (bound-and-true-p eglot--managed-mode)
    (let ((server (eglot-current-server)))
      (and server (object-of-class-p server 'flashls-eglot-server) server))))

(cl-defmethod flashls--manages-p ((_backend (eql 'eglot)))
  "Whether eglot's server here is flashls."
  (and (flashls-eglot--server) t))

(cl-defmethod flashls--position-params ((_backend (eql 'eglot)))
  "eglot's TextDocumentPositionParams of point."
  (eglot--TextDocumentPositionParams))

(cl-defmethod flashls--send-request ((_backend (eql 'eglot)) params on-answer)
  "Send PARAMS as `textDocument/inlineCompletion'; ON-ANSWER gets the result.
Returns (SERVER . ID)."
  (let ((server (flashls-eglot--server))
        (flashls-eglot--sent-id nil))
    ;; eglot sends edits once `eglot-send-changes-idle-time' passes without
    ;; any; the server must have the text it completes.
    (eglot--signal-textDocument/didChange)
    (jsonrpc-async-request server :textDocument/inlineCompletion params
                           :success-fn on-answer
                           :error-fn #'ignore ; mostly a cancelled request
                           :timeout-fn #'ignore
                           :timeout flashls-eglot--request-timeout)
    (cons server flashls-eglot--sent-id)))

(cl-defmethod flashls--cancel-request ((_backend (eql 'eglot)) handle)
  "Tell the server of HANDLE, (SERVER . ID), to drop that request."
  (when (cdr handle)
    (jsonrpc-notify (car handle) :$/cancelRequest (list :id (cdr handle)))))

(cl-defmethod flashls--send-notification ((_backend (eql 'eglot)) method params)
  "Send eglot's flashls server the notification METHOD with PARAMS."
  (jsonrpc-notify (flashls-eglot--server) (intern (concat ":" method)) params))

(add-to-list 'flashls--backends 'eglot)

(provide 'flashls-eglot)
;;; flashls-eglot.el ends here
